"""A Redfish service over HTTPS with authentication, shaped like an HGX baseboard's BMC, for the BMC cross-check.

What a real BMC does that the client depends on, and nothing else:

* ``/redfish/v1/`` (the service root) is readable without credentials and links
  ``SessionService/Sessions``; a ``POST`` there with ``UserName``/``Password``
  opens a session (``201``, ``X-Auth-Token``, ``Location``), a ``DELETE`` of the
  location closes it; every other resource needs the token or HTTP basic auth;
* ``Systems/HGX_Baseboard_0/Processors`` lists a host CPU (``ProcessorType``
  ``CPU``) and one ``GPU_SXM_n`` per card with ``SerialNumber``,
  ``FirmwareVersion``, ``UUID``, ``Model``, an ``EnvironmentMetrics`` link whose
  ``PowerWatts``/``TemperatureCelsius`` readings come from callables (so a test
  can make them follow a card's load over time), and ``Links.Chassis`` to
  ``Chassis/HGX_GPU_SXM_n``, whose ``Sensors`` give the same readings;
* ``Chassis/BMC_0`` carries the server's fans (``ThermalSubsystem/Fans``, each
  ``SpeedPercent`` from :attr:`RedfishServer.fan_percent`, a callable too);
* ``Systems/HGX_Baseboard_0`` offers ``#ComputerSystem.Reset`` (GracefulRestart,
  ForceRestart); an accepted request is recorded in :attr:`RedfishServer.resets`
  and handed to :attr:`RedfishServer.on_reset` (a test restarts its node agent
  there: a new boot), answered ``204`` first;
* ``layout="pcie"`` lists the cards instead as ``Chassis/HGX_GPU_SXM_n/PCIeDevices/GPU_n``
  with one ``ProcessingAccelerators`` function carrying the card's PCIe address
  (the way some OEM trees do), and ``Processors`` holds only the CPU.

:attr:`RedfishServer.fault` makes it misbehave the ways a BMC does (see
:data:`FAULTS`), one at a time. TLS: a certificate issued by the test's own CA
(:mod:`.pki`) for 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .pki import CertificateAuthority

SYSTEM = "/redfish/v1/Systems/HGX_Baseboard_0"
FAULTS = ("unauthorized", "forbidden", "server_error", "malformed", "truncated", "redirect", "slow",
          "no_sessions", "no_gpus", "no_serial", "duplicate_serial", "sensors_only", "legacy_thermal", "no_fans",
          "reset_refused")
RESET_TYPES = ("GracefulRestart", "ForceRestart")
LAYOUTS = ("processors", "pcie")
FANS = 6


@dataclass
class Gpu:
    serial: str
    firmware: str
    uuid: str
    model: str = "NVIDIA H200"
    pci_bus_id: str = "0000:18:00.0"
    power_w: Callable[[], float] = lambda: 72.0
    temperature_c: Callable[[], float] = lambda: 36.0


@dataclass
class RedfishServer:
    """A running service; :meth:`stop` ends it. ``fault`` may be changed while it runs."""

    gpus: list[Gpu]
    username: str
    password: str
    ca_file: Path
    fault: str | None = None
    layout: str = "processors"
    fan_percent: Callable[[], float] = lambda: 40.0
    on_reset: Callable[[str], None] | None = None
    resets: list[str] = field(default_factory=list)
    slow_s: float = 3.0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    # -- the tree -------------------------------------------------------------------------------------------------

    def resource(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/") or "/"
        gpus = [] if self.fault == "no_gpus" else self.gpus
        if path == "/redfish/v1":
            root: dict[str, Any] = {"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                                    "Id": "RootService", "RedfishVersion": "1.17.0",
                                    "Systems": {"@odata.id": "/redfish/v1/Systems"},
                                    "Chassis": {"@odata.id": "/redfish/v1/Chassis"}}
            if self.fault != "no_sessions":
                root["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
                root["Links"] = {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}
            return root
        if path == "/redfish/v1/Systems":
            return _collection(path, [SYSTEM])
        if path == SYSTEM:
            return {"@odata.id": SYSTEM, "Id": "HGX_Baseboard_0", "Name": "HGX Baseboard",
                    "Processors": {"@odata.id": f"{SYSTEM}/Processors"},
                    "Actions": {"#ComputerSystem.Reset": {
                        "target": f"{SYSTEM}/Actions/ComputerSystem.Reset",
                        "ResetType@Redfish.AllowableValues": list(RESET_TYPES)}}}
        if path == f"{SYSTEM}/Processors":
            listed = range(len(gpus)) if self.layout == "processors" else range(0)
            return _collection(path, [f"{SYSTEM}/Processors/CPU_0"]
                               + [f"{SYSTEM}/Processors/GPU_SXM_{i + 1}" for i in listed])
        if path == f"{SYSTEM}/Processors/CPU_0":
            return {"@odata.id": path, "Id": "CPU_0", "ProcessorType": "CPU", "SerialNumber": "CPU-0001",
                    "Model": "Host CPU"}
        if path == "/redfish/v1/Chassis":
            return _collection(path, ["/redfish/v1/Chassis/BMC_0"]
                               + [f"/redfish/v1/Chassis/HGX_GPU_SXM_{i + 1}" for i in range(len(gpus))])
        if path.startswith("/redfish/v1/Chassis/BMC_0"):
            return self._fans(path)
        for i, gpu in enumerate(gpus):
            found = self._gpu(path, i, gpu, gpus)
            if found is not None:
                return found
        return None

    def _gpu(self, path: str, i: int, gpu: Gpu, gpus: list[Gpu]) -> dict[str, Any] | None:
        base = f"{SYSTEM}/Processors/GPU_SXM_{i + 1}"
        chassis = f"/redfish/v1/Chassis/HGX_GPU_SXM_{i + 1}"
        device = f"{chassis}/PCIeDevices/GPU_{i + 1}"
        serial = gpus[0].serial if self.fault == "duplicate_serial" else gpu.serial
        identity = {"Manufacturer": "NVIDIA", "Model": gpu.model, "UUID": gpu.uuid, "SerialNumber": serial,
                    "FirmwareVersion": gpu.firmware}
        if self.fault == "no_serial" and i == 0:
            del identity["SerialNumber"]
        if path == base and self.layout == "processors":
            body = {"@odata.id": base, "@odata.type": "#Processor.v1_20_0.Processor", "Id": f"GPU_SXM_{i + 1}",
                    "ProcessorType": "GPU", **identity,
                    "EnvironmentMetrics": {"@odata.id": f"{base}/EnvironmentMetrics"},
                    "Links": {"Chassis": [{"@odata.id": chassis}]}}
            if self.fault == "sensors_only":
                del body["EnvironmentMetrics"]
            return body
        if path == f"{base}/EnvironmentMetrics" and self.layout == "processors":
            return {"@odata.id": path, "PowerWatts": {"Reading": round(gpu.power_w(), 2)},
                    "TemperatureCelsius": {"Reading": round(gpu.temperature_c(), 1)}}
        if path == chassis:
            body = {"@odata.id": chassis, "Id": f"HGX_GPU_SXM_{i + 1}", "ChassisType": "Module",
                    "Sensors": {"@odata.id": f"{chassis}/Sensors"}}
            if self.layout == "pcie":
                body["PCIeDevices"] = {"@odata.id": f"{chassis}/PCIeDevices"}
            return body
        if path == f"{chassis}/PCIeDevices" and self.layout == "pcie":
            return _collection(path, [device])
        if path == device and self.layout == "pcie":
            return {"@odata.id": device, "@odata.type": "#PCIeDevice.v1_14_0.PCIeDevice", "Id": f"GPU_{i + 1}",
                    "DeviceType": "SingleFunction", **identity,
                    "PCIeFunctions": {"@odata.id": f"{device}/PCIeFunctions"}}
        if path == f"{device}/PCIeFunctions" and self.layout == "pcie":
            return _collection(path, [f"{device}/PCIeFunctions/0"])
        if path == f"{device}/PCIeFunctions/0" and self.layout == "pcie":
            segment, bus, rest = gpu.pci_bus_id.split(":")
            slot, function = rest.split(".")
            return {"@odata.id": path, "Id": "0", "DeviceClass": "ProcessingAccelerators", "VendorId": "0x10de",
                    "SegmentNumber": int(segment, 16), "BusNumber": f"0x{bus}", "DeviceNumber": f"0x{slot}",
                    "FunctionNumber": int(function)}
        if path == f"{chassis}/Sensors":
            return _collection(path, [f"{chassis}/Sensors/HGX_GPU_SXM_{i + 1}_{s}_0" for s in ("Power", "TEMP")])
        if path == f"{chassis}/Sensors/HGX_GPU_SXM_{i + 1}_Power_0":
            return {"@odata.id": path, "ReadingType": "Power", "ReadingUnits": "W",
                    "Reading": round(gpu.power_w(), 2)}
        if path == f"{chassis}/Sensors/HGX_GPU_SXM_{i + 1}_TEMP_0":
            return {"@odata.id": path, "ReadingType": "Temperature", "ReadingUnits": "Cel",
                    "Reading": round(gpu.temperature_c(), 1)}
        return None

    def _fans(self, path: str) -> dict[str, Any] | None:
        """The server's fans, all at ``fan_percent`` (of 16 000 RPM), in the schema ``fault`` asks for."""
        chassis = "/redfish/v1/Chassis/BMC_0"
        percent = round(self.fan_percent(), 1)
        if path == chassis:
            body: dict[str, Any] = {"@odata.id": chassis, "Id": "BMC_0", "ChassisType": "RackMount"}
            if self.fault == "legacy_thermal":
                body["Thermal"] = {"@odata.id": f"{chassis}/Thermal"}
            elif self.fault != "no_fans":
                body["ThermalSubsystem"] = {"@odata.id": f"{chassis}/ThermalSubsystem"}
            return body
        if path == f"{chassis}/Thermal" and self.fault == "legacy_thermal":
            return {"@odata.id": path, "Fans": [{"MemberId": f"FAN_{n}", "Reading": round(percent * 160),
                                                 "ReadingUnits": "RPM"} for n in range(FANS)]}
        if path == f"{chassis}/ThermalSubsystem":
            return {"@odata.id": path, "Fans": {"@odata.id": f"{path}/Fans"}}
        if path == f"{chassis}/ThermalSubsystem/Fans":
            return _collection(path, [f"{path}/FAN_{n}" for n in range(FANS)])
        if path.startswith(f"{chassis}/ThermalSubsystem/Fans/FAN_"):
            return {"@odata.id": path, "Id": path.rsplit("/", 1)[-1],
                    "SpeedPercent": {"Reading": percent, "SpeedRPM": round(percent * 160)}}
        return None

    # -- HTTP -----------------------------------------------------------------------------------------------------

    def authorised(self, headers: Any) -> bool:
        token = headers.get("X-Auth-Token")
        if token and token in self._tokens:
            return True
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                return False
            return secrets.compare_digest(user, self.username) and secrets.compare_digest(password, self.password)
        return False

    def open_session(self, body: dict[str, Any]) -> str | None:
        if body.get("UserName") == self.username and body.get("Password") == self.password:
            token = secrets.token_hex(16)
            self._tokens[token] = secrets.token_hex(4)
            return token
        return None

    def close_session(self, session_id: str) -> bool:
        for token, sid in list(self._tokens.items()):
            if sid == session_id:
                del self._tokens[token]
                return True
        return False

    def session_id(self, token: str) -> str:
        return self._tokens[token]


class _Quiet(ThreadingHTTPServer):
    """A client that gives up mid-handshake or mid-answer (a TLS test, a timeout) is the client's business."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _collection(path: str, members: list[str]) -> dict[str, Any]:
    return {"@odata.id": path, "Members": [{"@odata.id": m} for m in members], "Members@odata.count": len(members)}


def _handler(server: RedfishServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: the tests read server.requests
            pass

        def _send(self, status: int, body: dict[str, Any] | bytes | None = None,
                  headers: dict[str, str] | None = None, length: int | None = None) -> None:
            data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length if length is not None else len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _path(self) -> str:
            return self.path.split("?", 1)[0]

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self._path()
            server.requests.append(("GET", path))
            root = path.rstrip("/") == "/redfish/v1"
            if not root and server.fault == "slow":
                time.sleep(server.slow_s)
            if not root and server.fault == "redirect":
                return self._send(302, {}, {"Location": f"https://203.0.113.9{path}"})
            if not root and server.fault in ("unauthorized", "forbidden"):
                return self._send(401 if server.fault == "unauthorized" else 403, {"error": {"code": "denied"}})
            if not root and not server.authorised(self.headers):
                return self._send(401, {"error": {"code": "Base.1.0.NoValidSession"}})
            if server.fault == "server_error" and path.endswith("/Processors"):
                return self._send(500, {"error": {"code": "Base.1.0.InternalError"}})
            body = server.resource(path)
            if body is None:
                return self._send(404, {"error": {"code": "Base.1.0.ResourceMissingAtURI"}})
            if server.fault == "malformed" and "GPU_SXM_1" in path and not path.endswith("Metrics"):
                return self._send(200, b'{"Id": "GPU_SXM_1", "SerialNumber": ')
            if server.fault == "truncated" and "GPU_SXM_1" in path and not path.endswith("Metrics"):
                data = json.dumps(body).encode()
                self._send(200, data[: len(data) // 2], length=len(data))
                self.close_connection = True
                return None
            return self._send(200, body)

        def do_POST(self) -> None:  # noqa: N802
            path = self._path()
            server.requests.append(("POST", path))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if path == f"{SYSTEM}/Actions/ComputerSystem.Reset":
                return self._reset(raw)
            if path != "/redfish/v1/SessionService/Sessions" or server.fault == "no_sessions":
                return self._send(405, {"error": {"code": "Base.1.0.OperationNotAllowed"}})
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return self._send(400, {"error": {"code": "Base.1.0.MalformedJSON"}})
            token = server.open_session(body if isinstance(body, dict) else {})
            if token is None:
                return self._send(401, {"error": {"code": "Base.1.0.NoValidSession"}})
            sid = server.session_id(token)
            return self._send(201, {"Id": sid, "UserName": server.username},
                              {"X-Auth-Token": token, "Location": f"/redfish/v1/SessionService/Sessions/{sid}"})

        def _reset(self, raw: bytes) -> None:
            if not server.authorised(self.headers):
                return self._send(401, {"error": {"code": "Base.1.0.NoValidSession"}})
            try:
                reset_type = json.loads(raw or b"{}").get("ResetType")
            except (ValueError, AttributeError):
                return self._send(400, {"error": {"code": "Base.1.0.MalformedJSON"}})
            if server.fault == "reset_refused":
                return self._send(409, {"error": {"code": "Base.1.0.ResourceInUse"}})
            if reset_type not in RESET_TYPES:
                return self._send(400, {"error": {"code": "Base.1.0.ActionParameterValueNotInList"}})
            server.resets.append(reset_type)
            self._send(204)
            if server.on_reset is not None:
                threading.Thread(target=server.on_reset, args=(reset_type,), name="reset", daemon=True).start()
            return None

        def do_DELETE(self) -> None:  # noqa: N802
            path = self._path()
            server.requests.append(("DELETE", path))
            if not server.authorised(self.headers):
                return self._send(401, {})
            closed = server.close_session(path.rsplit("/", 1)[-1])
            return self._send(204 if closed else 404)

    return Handler


def serve(gpus: list[Gpu], directory: Path, *, username: str = "admin", password: str = "s3cret-bmc",
          layout: str = "processors") -> RedfishServer:
    """A Redfish service on a free port of 127.0.0.1 over TLS (its CA certificate at ``server.ca_file``)."""
    ca = CertificateAuthority(directory / "redfish-ca", common_name="cardeval-bmc-ca")
    pair = ca.issue("bmc", "bmc.test", server=True, ip_addresses=("127.0.0.1",))
    server = RedfishServer(gpus, username, password, ca.cert_file, layout=layout)
    httpd = _Quiet(("127.0.0.1", 0), _handler(server))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert_file, pair.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server._httpd = httpd
    threading.Thread(target=httpd.serve_forever, name="redfish", daemon=True).start()
    return server
