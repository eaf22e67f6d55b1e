"""A Redfish client for the BMC cross-check (6.1.b–e): the server's GPUs as its management controller sees them.

Built on ``requests`` rather than DMTF's ``redfish`` library, whose defaults
this check cannot accept: it turns TLS verification off unless a CA file is
given (and silences urllib3's warning about it for the whole process), and it
follows redirects carrying the session token. Here:

* TLS is verified against the system's CA bundle, or ``ca_file``; turning
  verification off is ``insecure=True``, an explicit choice the caller records;
* a redirect is refused (a BMC answers where it is asked; a 3xx to another host
  would take the credentials there);
* a session (``SessionService/Sessions``, ``X-Auth-Token``) is opened where the
  BMC offers one and deleted at the end; otherwise HTTP basic authentication;
* every request has a timeout, and connection errors and 5xx answers to a GET
  are retried a bounded number of times;
* no message, exception or ``repr`` carries the password or the token.

:func:`gpus` walks ``Systems/*/Processors`` for processors whose
``ProcessorType`` is ``GPU`` or ``Accelerator`` — or, in a tree that lists its
cards only as PCIe devices, ``Chassis/*/PCIeDevices`` whose functions'
``DeviceClass`` is ``ProcessingAccelerators`` or ``DisplayController`` — and
reads each one's serial number, firmware version, UUID, PCIe address (its
function's ``SegmentNumber``/``BusNumber``/``DeviceNumber``/``FunctionNumber``,
where the BMC gives them) and, from its ``EnvironmentMetrics`` — else the
``Sensors`` of the chassis it links to or sits in — power and temperature.
:func:`fans` reads every chassis's fans (``ThermalSubsystem/Fans``, else the
older ``Thermal`` resource).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ACCELERATOR_TYPES = ("GPU", "Accelerator")
ACCELERATOR_CLASSES = ("ProcessingAccelerators", "DisplayController")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 2
RETRY_PAUSE_S = 0.5


class RedfishError(Exception):
    """The BMC could not be read: what was asked and why (never a credential)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BmcGpu:
    """One accelerator as the BMC reports it (None: the BMC does not say)."""

    path: str
    id: str
    serial: str | None
    firmware: str | None
    uuid: str | None
    model: str | None
    power_w: float | None
    temperature_c: float | None
    #: ``dddd:bb:dd.f`` in lower case.
    pci_address: str | None = None


@dataclass(frozen=True)
class Fan:
    """One fan's speed as the BMC reports it: percent of full speed, or RPM (None: not reported)."""

    id: str
    percent: float | None
    rpm: float | None


def read_credentials(path: str | None, user_env: str, password_env: str) -> Credentials:
    """From ``path`` (a JSON or YAML file with ``username`` and ``password``), else the two environment variables
    (the operator's Jobs get them from the Secret the spec names); RedfishError naming what is missing."""
    if path:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RedfishError(f"--param credentials_file={path}: unreadable ({type(exc).__name__})") from None
        if not (isinstance(data, dict) and isinstance(data.get("username"), str)
                and isinstance(data.get("password"), str)):
            raise RedfishError(f"--param credentials_file={path}: needs username and password (strings)")
        return Credentials(data["username"], data["password"])
    user, password = os.environ.get(user_env), os.environ.get(password_env)
    if not user or password is None:
        raise RedfishError(f"no BMC credentials: --param credentials_file, or {user_env} and {password_env}")
    return Credentials(user, password)


class Client:
    """An authenticated conversation with one BMC; use as a context manager (it logs in and out)."""

    def __init__(self, endpoint: str, credentials: Credentials, *, ca_file: str | None = None,
                 insecure: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise RedfishError(f"the BMC endpoint must be an https:// URL with a host, not {endpoint!r}")
        self.base = f"https://{parts.netloc}"
        self.credentials = credentials
        self.verify: bool | str = False if insecure else (ca_file or True)
        self.timeout_s = timeout_s
        self.retries = retries
        self.auth_method = ""
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json", "OData-Version": "4.0"})
        self._session_uri: str | None = None

    def __enter__(self) -> Client:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    def describe(self) -> str:
        tls = "TLS NOT verified (insecure, by request)" if self.verify is False else (
            f"TLS verified against {self.verify}" if isinstance(self.verify, str) else
            "TLS verified against the system's CA bundle")
        return f"Redfish at {self.base} ({self.auth_method or 'not logged in'}; {tls})"

    def login(self) -> None:
        root = self.get("/redfish/v1/", authenticated=False)
        links = root.get("Links")
        sessions = link(links, "Sessions") if isinstance(links, dict) else None
        if sessions:
            answer = self._request("POST", sessions, json={"UserName": self.credentials.username,
                                                           "Password": self.credentials.password})
            if answer.status_code in (200, 201) and answer.headers.get("X-Auth-Token"):
                self._session.headers["X-Auth-Token"] = answer.headers["X-Auth-Token"]
                location = answer.headers.get("Location")
                self._session_uri = urlsplit(location).path if location else None
                self.auth_method = "session"
                return
            if answer.status_code in (401, 403):
                raise RedfishError(f"the BMC refused the credentials for a session (HTTP {answer.status_code})")
        self._session.auth = (self.credentials.username, self.credentials.password)
        self.auth_method = "basic authentication"
        self.get("/redfish/v1/Systems")  # fails here, with the reason, if the credentials are wrong

    def logout(self) -> None:
        if self._session_uri:
            try:
                self._request("DELETE", self._session_uri)
            except RedfishError:
                pass  # the session expires on the BMC by itself
            self._session_uri = None
        self._session.close()

    def get(self, path: str, authenticated: bool = True) -> dict[str, Any]:
        """The JSON object at ``path``; RedfishError on anything else."""
        for attempt in range(self.retries + 1):
            answer = self._request("GET", path, authenticated=authenticated)
            if answer.status_code >= 500 and attempt < self.retries:
                time.sleep(RETRY_PAUSE_S)
                continue
            break
        if 300 <= answer.status_code < 400:
            raise RedfishError(f"GET {path}: the BMC redirected (HTTP {answer.status_code}) to "
                               f"{answer.headers.get('Location', '?')}; redirects are not followed")
        if answer.status_code in (401, 403):
            raise RedfishError(f"GET {path}: the BMC refused the credentials (HTTP {answer.status_code})")
        if answer.status_code != 200:
            raise RedfishError(f"GET {path}: HTTP {answer.status_code} {answer.reason}")
        try:
            body = json.loads(answer.content)
        except ValueError as exc:
            raise RedfishError(f"GET {path}: the answer is not JSON ({exc}; {len(answer.content)} bytes)") from None
        if not isinstance(body, dict):
            raise RedfishError(f"GET {path}: the answer is a JSON {type(body).__name__}, not an object")
        return body

    def post(self, path: str, body: dict[str, Any]) -> int:
        """POST ``body`` (an action); the HTTP status of an accepted request, RedfishError otherwise. Never
        retried: an action is not idempotent."""
        answer = self._request("POST", path, json=body)
        if answer.status_code in (401, 403):
            raise RedfishError(f"POST {path}: the BMC refused the credentials (HTTP {answer.status_code})")
        if not 200 <= answer.status_code < 300:
            raise RedfishError(f"POST {path}: HTTP {answer.status_code} {answer.reason} "
                               f"({answer.content[:200].decode('utf-8', 'replace')})")
        return answer.status_code

    def _request(self, method: str, path: str, authenticated: bool = True, **kwargs: Any) -> requests.Response:
        url = self.base + path
        for attempt in range(self.retries + 1):
            try:
                if authenticated:
                    return self._session.request(method, url, timeout=self.timeout_s, verify=self.verify,
                                                 allow_redirects=False, **kwargs)
                return requests.request(method, url, timeout=self.timeout_s, verify=self.verify,
                                        allow_redirects=False, headers={"Accept": "application/json"}, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise RedfishError(f"{method} {path}: TLS failed ({_reason(exc)})") from None
            except requests.exceptions.Timeout:
                if attempt == self.retries or method != "GET":
                    raise RedfishError(f"{method} {path}: no answer within {self.timeout_s:g} s "
                                       f"({attempt + 1} attempts)") from None
            except requests.exceptions.ConnectionError as exc:
                if attempt == self.retries or method != "GET":
                    raise RedfishError(f"{method} {path}: cannot connect to {self.base} ({_reason(exc)})") from None
            except requests.exceptions.RequestException as exc:
                raise RedfishError(f"{method} {path}: {_reason(exc)}") from None
            time.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, short (URLs and reasons only: requests puts no secret there)."""
    text = str(exc.__context__ or exc) if isinstance(exc, requests.exceptions.ConnectionError) else str(exc)
    return text[-300:]


def _members(client: Client, path: str) -> list[str]:
    collection = client.get(path)
    members = collection.get("Members")
    if not isinstance(members, list):
        raise RedfishError(f"GET {path}: a collection without Members")
    return [m["@odata.id"] for m in members if isinstance(m, dict) and isinstance(m.get("@odata.id"), str)]


def _reading(metrics: dict[str, Any], key: str) -> float | None:
    return _number(metrics[key].get("Reading")) if isinstance(metrics.get(key), dict) else None


def gpus(client: Client) -> list[BmcGpu]:
    """Every GPU/accelerator processor of every system, with its identity and current readings; where no system
    lists one, every accelerator PCIe device of every chassis."""
    found = []
    for system in _members(client, "/redfish/v1/Systems"):
        processors = link(client.get(system), "Processors")
        if not processors:
            continue
        for path in _members(client, processors):
            gpu = read_gpu(client, path)
            if gpu is not None:
                found.append(gpu)
    if found:
        return found
    for chassis in _members(client, "/redfish/v1/Chassis"):
        devices = link(client.get(chassis), "PCIeDevices")
        for path in _members(client, devices) if devices else []:
            gpu = read_gpu(client, path)
            if gpu is not None:
                found.append(gpu)
    return found


def read_gpu(client: Client, path: str) -> BmcGpu | None:
    """The processor or PCIe device at ``path`` now (None: not a GPU or accelerator)."""
    resource = client.get(path)
    if "ProcessorType" in resource:
        if resource.get("ProcessorType") not in ACCELERATOR_TYPES:
            return None
        functions = [client.get(p) for p in linked(resource, "PCIeFunctions")[:1]]
    else:
        collection = link(resource, "PCIeFunctions")
        functions = [client.get(p) for p in _members(client, collection)] if collection else []
        if not any(f.get("DeviceClass") in ACCELERATOR_CLASSES for f in functions):
            return None
    metrics_path = link(resource, "EnvironmentMetrics")
    metrics = client.get(metrics_path) if metrics_path else {}
    power, temperature = _reading(metrics, "PowerWatts"), _reading(metrics, "TemperatureCelsius")
    if power is None or temperature is None:
        chassis = linked(resource, "Chassis")[:1] or (
            [path.split("/PCIeDevices/", 1)[0]] if "/PCIeDevices/" in path else [])
        sensed = _chassis_sensors(client, chassis[0]) if chassis else {}
        power = power if power is not None else sensed.get("Power")
        temperature = temperature if temperature is not None else sensed.get("Temperature")
    return BmcGpu(path=path, id=str(resource.get("Id", path.rsplit("/", 1)[-1])),
                  serial=_text(resource.get("SerialNumber")), firmware=_text(resource.get("FirmwareVersion")),
                  uuid=_text(resource.get("UUID")), model=_text(resource.get("Model")),
                  power_w=power, temperature_c=temperature,
                  pci_address=next((a for a in map(_pci_address, functions) if a), None))


def _is_link(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("@odata.id"), str)


def link(resource: dict[str, Any], key: str) -> str | None:
    """The ``@odata.id`` under ``resource[key]`` (None: absent, or not a link: a malformed tree is not followed)."""
    value = resource.get(key)
    return value["@odata.id"] if isinstance(value, dict) and _is_link(value) else None


def linked(resource: dict[str, Any], key: str) -> list[str]:
    """The ``@odata.id`` of each link in ``resource["Links"][key]`` (an array of links; anything else: none)."""
    links = resource.get("Links")
    values = links.get(key) if isinstance(links, dict) else None
    return [v["@odata.id"] for v in values if _is_link(v)] if isinstance(values, list) else []


def _pci_address(function: dict[str, Any]) -> str | None:
    """``dddd:bb:dd.f`` from a PCIe function's segment, bus, device and function numbers (hex strings such as
    ``"0x1b"`` or integers), None when the BMC does not give the bus and device."""
    parts = []
    for key, default in (("SegmentNumber", 0), ("BusNumber", None), ("DeviceNumber", None),
                         ("FunctionNumber", function.get("FunctionId", 0))):
        value = function.get(key, default)
        if value is None or isinstance(value, bool):
            return None
        try:
            parts.append(value if isinstance(value, int) else int(str(value), 0))
        except ValueError:
            return None
    return _address(*parts)


def normal_pci_address(text: str | None) -> str | None:
    """An OS's PCIe address (NVML's ``00000000:1B:00.0``, lspci's ``1b:00.0``) as ``dddd:bb:dd.f``."""
    if not text:
        return None
    head, _, func = text.strip().lower().rpartition(".")
    fields = head.split(":")
    if len(fields) == 2:
        fields.insert(0, "0")
    try:
        segment, bus, device = (int(f, 16) for f in fields)
        return _address(segment, bus, device, int(func, 16))
    except ValueError:
        return None


#: The largest PCI segment, bus, device and function numbers.
PCI_LIMITS = (0xFFFF, 0xFF, 0x1F, 0x7)


def _address(*numbers: int) -> str | None:
    """``dddd:bb:dd.f``, None when a number is outside what PCI allows (a garbled reading, not an address)."""
    if len(numbers) != 4 or any(not 0 <= n <= limit for n, limit in zip(numbers, PCI_LIMITS, strict=True)):
        return None
    segment, bus, device, func = numbers
    return f"{segment:04x}:{bus:02x}:{device:02x}.{func:x}"


def _chassis_sensors(client: Client, chassis_path: str) -> dict[str, float]:
    """The first Power and Temperature sensor readings of a GPU's own chassis, where a tree puts them there rather
    than in the GPU's ``EnvironmentMetrics`` (HGX baseboards do both)."""
    found: dict[str, float] = {}
    sensors = link(client.get(chassis_path), "Sensors")
    for sensor_path in _members(client, sensors) if sensors else []:
        sensor = client.get(sensor_path)
        kind, value = sensor.get("ReadingType"), sensor.get("Reading")
        if kind in ("Power", "Temperature") and kind not in found and (number := _number(value)) is not None:
            found[kind] = number
    return found


def fans(client: Client) -> list[Fan]:
    """Every fan of every chassis: ``ThermalSubsystem/Fans`` members (``SpeedPercent.Reading`` and
    ``SpeedRPM``), else the older ``Thermal`` resource's ``Fans`` (``Reading`` in ``ReadingUnits``)."""
    found: list[Fan] = []
    for chassis_path in _members(client, "/redfish/v1/Chassis"):
        chassis = client.get(chassis_path)
        subsystem = link(chassis, "ThermalSubsystem")
        collection = link(client.get(subsystem), "Fans") if subsystem else None
        if collection:
            for path in _members(client, collection):
                fan = client.get(path)
                speed = fan["SpeedPercent"] if isinstance(fan.get("SpeedPercent"), dict) else {}
                found.append(Fan(f"{chassis.get('Id', chassis_path)}/{fan.get('Id', path.rsplit('/', 1)[-1])}",
                                 _number(speed.get("Reading")), _number(speed.get("SpeedRPM"))))
            continue
        thermal = link(chassis, "Thermal")
        for fan in (client.get(thermal).get("Fans") or []) if thermal else []:
            if not isinstance(fan, dict):
                continue
            value, unit = _number(fan.get("Reading")), fan.get("ReadingUnits")
            name = f"{chassis.get('Id', chassis_path)}/{fan.get('MemberId') or fan.get('Name') or len(found)}"
            found.append(Fan(name, value if unit == "Percent" else None, value if unit == "RPM" else None))
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


@dataclass(frozen=True)
class ResetAction:
    """A system's ``ComputerSystem.Reset``: where to POST it and the reset types the BMC allows (empty: unstated)."""

    system: str
    target: str
    allowed: tuple[str, ...]


def reset_actions(client: Client) -> list[ResetAction]:
    """The ``#ComputerSystem.Reset`` action of every system that offers one."""
    found = []
    for system in _members(client, "/redfish/v1/Systems"):
        actions = client.get(system).get("Actions")
        action = actions.get("#ComputerSystem.Reset") if isinstance(actions, dict) else None
        target = action.get("target") if isinstance(action, dict) else None
        if isinstance(target, str) and target.startswith("/"):
            allowed = action.get("ResetType@Redfish.AllowableValues")  # type: ignore[union-attr]
            found.append(ResetAction(system, target, tuple(a for a in allowed if isinstance(a, str))
                                     if isinstance(allowed, list) else ()))
    return found


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
