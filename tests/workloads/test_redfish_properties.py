"""Whatever a BMC's tree holds, the walk over it ends in GPUs, fans, or a RedfishError with the reason.

The HTTP layer (TLS, authentication, redirects, truncated and slow answers) is tested against a real
server in test_redfish; here the documents themselves are generated — any JSON, shaped or not like
Redfish, linking to each other — and served in place of HTTP by :class:`_Tree`, so that thousands of
trees are walked in seconds: the walk never crashes, never loops, and what it returns is well typed.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardeval_workloads.suite._redfish import (
    BmcGpu, Client, Credentials, Fan, RedfishError, _pci_address, fans, gpus, normal_pci_address, read_gpu,
)

PATHS = ["/redfish/v1/Systems", "/redfish/v1/Chassis", "/redfish/v1/Systems/S", "/redfish/v1/Chassis/C",
         "/redfish/v1/Chassis/C/PCIeDevices/D", "/r/a", "/r/b", "/r/c"]
KEYS = ["Members", "@odata.id", "Processors", "ProcessorType", "Links", "Chassis", "PCIeFunctions", "PCIeDevices",
        "DeviceClass", "SegmentNumber", "BusNumber", "DeviceNumber", "FunctionNumber", "FunctionId", "SerialNumber",
        "FirmwareVersion", "UUID", "Model", "Id", "EnvironmentMetrics", "PowerWatts", "TemperatureCelsius",
        "Reading", "Sensors", "ReadingType", "ThermalSubsystem", "Fans", "SpeedPercent", "SpeedRPM", "Thermal",
        "ReadingUnits", "MemberId", "Name"]
WORDS = ["GPU", "Accelerator", "CPU", "ProcessingAccelerators", "DisplayController", "Power", "Temperature",
         "Percent", "RPM", "0x1b", "27", "zz", ""]

links = st.builds(lambda p: {"@odata.id": p}, st.sampled_from(PATHS))
scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
           | st.sampled_from(WORDS + PATHS) | st.text(max_size=8))
json_values = st.recursive(
    scalars | links,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4),
                                                                inner, max_size=6),
    max_leaves=30)
documents = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
trees = st.dictionaries(st.sampled_from(PATHS), documents | json_values, max_size=len(PATHS))


class _Tree(Client):
    """A Client whose GET answers from a generated tree: the JSON object at a path, else what the real client
    says of anything else (a 404, a document that is not an object)."""

    def __init__(self, tree: dict[str, Any]) -> None:
        super().__init__("https://bmc.test", Credentials("u", "p"))
        self.tree = tree
        self.gets = 0

    def get(self, path: str, authenticated: bool = True) -> dict[str, Any]:
        self.gets += 1
        if self.gets > 10_000:
            raise AssertionError("the walk does not end")
        if not isinstance(path, str):
            raise AssertionError(f"the walk asked for a path that is not a string: {path!r}")
        body = self.tree.get(path)
        if body is None:
            raise RedfishError(f"GET {path}: HTTP 404 Not Found")
        if not isinstance(body, dict):
            raise RedfishError(f"GET {path}: the answer is a JSON {type(body).__name__}, not an object")
        return body


def _optional(value: object, kind: type) -> bool:
    return value is None or isinstance(value, kind)


ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_any_tree_gives_well_typed_gpus_and_fans_or_a_redfish_error(tree):
    client = _Tree(tree)
    try:
        found = gpus(client)
    except RedfishError:
        found = []
    for gpu in found:
        assert isinstance(gpu, BmcGpu) and isinstance(gpu.path, str) and isinstance(gpu.id, str)
        assert all(_optional(v, str) for v in (gpu.serial, gpu.firmware, gpu.uuid, gpu.model))
        assert all(_optional(v, float) for v in (gpu.power_w, gpu.temperature_c))
        assert gpu.pci_address is None or ADDRESS.match(gpu.pci_address), gpu.pci_address
    try:
        seen = fans(client)
    except RedfishError:
        seen = []
    for fan in seen:
        assert isinstance(fan, Fan) and isinstance(fan.id, str)
        assert _optional(fan.percent, float) and _optional(fan.rpm, float)
    for path in PATHS:
        try:
            gpu = read_gpu(client, path)
        except RedfishError:
            continue
        assert gpu is None or isinstance(gpu, BmcGpu)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["SegmentNumber", "BusNumber", "DeviceNumber", "FunctionNumber",
                                        "FunctionId"]), scalars, max_size=5))
def test_a_pcie_function_gives_an_address_or_none(function):
    address = _pci_address(function)
    assert address is None or ADDRESS.match(address), address


@settings(max_examples=500, deadline=None)
@given(st.none() | st.text(max_size=24) | st.from_regex(r"[0-9a-fA-F]{0,8}:?[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\."
                                                       r"[0-9a-fA-F]", fullmatch=True))
def test_an_os_pcie_address_is_normalised_or_refused(text):
    normal = normal_pci_address(text)
    assert normal is None or ADDRESS.match(normal), normal
    if normal is not None:
        assert normal_pci_address(normal) == normal
