"""The result envelope: the one contract between a workload and the engine.

Every workload prints exactly one envelope. Both sides import this module, and
nothing else of each other: the operator image has no torch and the workload
image has no kopf, so this module depends on pydantic and the standard library
only (an import-linter contract keeps it so).

Two renderings exist because Kubernetes gives two channels:

* the full envelope, printed on stdout as one line after ``ENVELOPE_MARKER``
  (the local executor reads it from the process, the operator from pod logs);
* the compact envelope, written to the termination-message file, which the
  kubelet truncates at 4 KiB.  It keeps what verdicts need (checks, metric
  values, errors, device identity) and drops samples and power traces.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Final, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

#: Bump the suffix on any incompatible change; the engine refuses other versions.
ENVELOPE_VERSION: Final = "cardeval.io/envelope/v1"

#: Prefix of the stdout line that carries the full envelope.
ENVELOPE_MARKER = "::cardeval-envelope::"

#: The kubelet's limit for a termination message.
TERMINATION_MESSAGE_LIMIT = 4096

#: Where a container writes its termination message unless the pod says otherwise.
DEFAULT_TERMINATION_PATH = "/dev/termination-log"

#: The one error of the envelope ``to_compact_json`` writes when even the shed rendering does not
#: fit: the full envelope is then only in the log.  The engine recognises it by this template
#: (see :func:`is_compact_overflow`), never by guessing at words.
COMPACT_OVERFLOW_ERROR = ("compact envelope is {size} bytes, over the {limit}-byte termination-message "
                          "limit; read the full envelope from the logs")

_OVERFLOW_RE = re.compile(re.escape(COMPACT_OVERFLOW_ERROR)
                          .replace(re.escape("{size}"), r"(?P<size>\d+)")
                          .replace(re.escape("{limit}"), r"(?P<limit>\d+)"))


def _one_scalar_error(source: object, handler: GetCoreSchemaHandler) -> CoreSchema:
    """A scalar that is none of its types gives one error at its own path, not one per type."""
    schema = handler(source)
    # The union's schema, inside the nullable one: plain dicts, edited in place (pydantic's way).
    outer = cast(dict[str, Any], schema)
    union = cast(dict[str, Any], outer["schema"]) if outer["type"] == "nullable" else outer
    union["custom_error_type"] = "scalar_type"
    union["custom_error_message"] = "Input should be a string, number, boolean or null"
    return schema


#: A parameter value or a check's observed/expected value: exactly one of these JSON types.
Scalar = Annotated[str | float | int | bool | None, GetPydanticSchema(_one_scalar_error)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Stats(_Strict):
    """Statistics over the repeats of one measurement."""

    n: int = Field(ge=0)
    mean: float
    median: float
    min: float
    max: float
    stdev: float = Field(ge=0)
    samples: list[float] = Field(default_factory=list, max_length=1024)

    @classmethod
    def of(cls, values: list[float], keep_samples: bool = True) -> Stats:
        if not values:
            raise ValueError("statistics of no values")
        ordered = sorted(values)
        n = len(ordered)
        mean = sum(ordered) / n
        mid = n // 2
        median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        var = sum((v - mean) ** 2 for v in ordered) / (n - 1) if n > 1 else 0.0
        return cls(
            n=n, mean=mean, median=median, min=ordered[0], max=ordered[-1],
            stdev=math.sqrt(var), samples=list(values)[:1024] if keep_samples else [],
        )


class Metric(_Strict):
    """One measured quantity. ``value`` is the figure a verdict uses."""

    name: str = Field(min_length=1, max_length=128)
    value: float | None = None
    unit: str = Field(default="", max_length=32)
    stats: Stats | None = None
    device: int | None = Field(default=None, description="card index, None for node-wide")
    labels: dict[str, str] = Field(default_factory=dict)
    #: Why ``value`` is None (unsupported, unreadable...). Never a made-up number.
    unavailable: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _value_or_reason(self) -> Metric:
        if self.value is None and not self.unavailable:
            raise ValueError(f"metric {self.name!r}: no value and no reason it is unavailable")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"metric {self.name!r}: value {self.value!r} is not finite")
        return self


class Check(_Strict):
    """A named yes/no finding. ``ok=None`` means it could not be determined."""

    name: str = Field(min_length=1, max_length=128)
    ok: bool | None = None  # default: exclude_none drops it from the JSON when undecided
    detail: str = Field(default="", max_length=1024)
    observed: Scalar = None
    expected: Scalar = None
    device: int | None = None


class InfoField(_Strict):
    """A management value read from the card, or the reason it could not be."""

    value: str | None = None
    source: str = Field(default="", max_length=64, description="nvml, sysfs, torch, vendor tool...")
    unavailable: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _value_or_reason(self) -> InfoField:
        if self.value is None and not self.unavailable:
            raise ValueError("a field with no value must say why it is unavailable")
        return self


class DeviceIdentity(_Strict):
    """What a workload learned about one card (or the host CPU standing in)."""

    index: int = Field(ge=0)
    backend: str = Field(max_length=32, description="cuda, rocm, npu, mlu, musa, xpu, cpu...")
    name: str = Field(default="", max_length=256)
    is_accelerator: bool = True
    fields: dict[str, InfoField] = Field(default_factory=dict)


class PowerSample(_Strict):
    t: float = Field(description="seconds since the workload started")
    device: int = Field(ge=0)
    watts: float | None = None
    energy_j: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    utilization_pct: float | None = None


class Envelope(_Strict):
    """Everything one workload run reports."""

    api_version: Literal["cardeval.io/envelope/v1"] = Field(default=ENVELOPE_VERSION, alias="apiVersion")
    workload: str = Field(min_length=1, max_length=64)
    status: Literal["ok", "error"] = "ok"
    started_at: datetime = Field(alias="startedAt")
    finished_at: datetime = Field(alias="finishedAt")
    host: str = Field(default="", max_length=253)
    backend: str = Field(default="", max_length=32)
    profile: str = Field(default="", max_length=32)
    params: dict[str, Scalar] = Field(default_factory=dict)
    devices: list[DeviceIdentity] = Field(default_factory=list, max_length=64)
    metrics: list[Metric] = Field(default_factory=list, max_length=4096)
    checks: list[Check] = Field(default_factory=list, max_length=4096)
    power: list[PowerSample] = Field(default_factory=list, max_length=100_000)
    errors: list[str] = Field(default_factory=list, max_length=64)
    versions: dict[str, str] = Field(default_factory=dict)
    #: True when this is the compact rendering (samples and power dropped).
    compact: bool = False
    #: True when per-card checks and metrics were folded into one per name (see ``aggregated``).
    aggregated: bool = False

    @field_validator("errors")
    @classmethod
    def _short_errors(cls, errors: list[str]) -> list[str]:
        return [e[:2000] for e in errors]

    @model_validator(mode="after")
    def _consistent(self) -> Envelope:
        if self.finished_at < self.started_at:
            raise ValueError("finishedAt is before startedAt")
        if self.status == "error" and not self.errors:
            raise ValueError("status is error but no error is given")
        names = [(m.name, m.device, tuple(sorted(m.labels.items()))) for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError("a metric is reported twice for the same device and labels")
        return self

    # --- lookups the judge uses -------------------------------------------------

    def metric(self, name: str, device: int | None = None, **labels: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name and (device is None or m.device == device) and all(
                m.labels.get(k) == v for k, v in labels.items()
            ):
                return m
        return None

    def metrics_named(self, name: str) -> list[Metric]:
        return [m for m in self.metrics if m.name == name]

    def checks_named(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.name == name]

    def aggregated_copy(self) -> Envelope:
        """This envelope with per-card checks and metrics folded by name (see ``_fold_per_card``)."""
        out = self.model_copy(deep=True)
        checks: dict[str, list[Check]] = {}
        for c in self.checks:
            checks.setdefault(c.name, []).append(c)
        out.checks = []
        for name, group in checks.items():
            worst = min(group, key=lambda c: _WORST[c.ok])
            bad = sum(1 for c in group if c.ok is not True)
            detail = worst.detail if len(group) == 1 else f"{len(group)} cards, {bad} not ok; worst: {worst.detail}"
            out.checks.append(Check(name=name, ok=worst.ok, device=worst.device, detail=detail[:120],
                                    observed=worst.observed if len(group) == 1 else bad))
        metrics: dict[tuple[str, tuple[tuple[str, str], ...]], list[Metric]] = {}
        for m in self.metrics:
            if m.labels.get("detail") == "true":
                continue
            metrics.setdefault((m.name, tuple(sorted(m.labels.items()))), []).append(m)
        out.metrics = []
        for (name, labels), same in metrics.items():
            valued = [m for m in same if m.value is not None]
            if len(same) == 1:
                out.metrics.append(same[0].model_copy(update={"stats": None}))
            elif not valued:
                out.metrics.append(Metric(name=name, unit=same[0].unit, labels=dict(labels),
                                          unavailable=(same[0].unavailable or "")[:200]))
            else:
                for tag, pick in (("min", min), ("max", max)):
                    chosen = pick(valued, key=_value)
                    unavailable = len(same) - len(valued)
                    out.metrics.append(Metric(
                        name=name, value=chosen.value, unit=chosen.unit, device=chosen.device,
                        labels={**dict(labels), "aggregate": tag,
                                **({"unavailable_cards": str(unavailable)} if unavailable else {})}))
        out.aggregated = True
        return out

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    # --- renderings -------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def stdout_line(self) -> str:
        return ENVELOPE_MARKER + self.to_json()

    def to_compact_json(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The verdict-bearing part, guaranteed to fit in ``limit`` bytes.

        Shedding order: samples and power first, then device fields, then
        check details, then metrics labelled as detail; if it still does not
        fit, an error envelope says so (the full envelope is still in the logs).
        """
        slim = self.model_copy(deep=True)
        slim.compact = True
        slim.power = []
        slim.params = {}
        for m in slim.metrics:
            if m.stats is not None:
                m.stats = m.stats.model_copy(update={"samples": []})
        text = slim.to_json()
        for step in _SHEDDING:
            if len(text.encode()) <= limit:
                return text
            step(slim)
            text = slim.to_json()
        if len(text.encode()) <= limit:
            return text
        overflow = Envelope(
            workload=self.workload, status="error", started_at=self.started_at,
            finished_at=self.finished_at, host=self.host, backend=self.backend, compact=True,
            errors=[COMPACT_OVERFLOW_ERROR.format(size=len(text.encode()), limit=limit)],
        )
        return overflow.to_json()


#: The only fields an overflow envelope carries besides its error (see ``to_compact_json``).
OVERFLOW_IDENTITY = ("workload", "started_at", "finished_at", "host", "backend")


def is_compact_overflow(env: Envelope) -> bool:
    """Whether ``env`` is exactly the overflow notice ``to_compact_json`` writes, and nothing else."""
    if not (env.compact and env.status == "error" and len(env.errors) == 1):
        return False
    match = _OVERFLOW_RE.fullmatch(env.errors[0])
    if match is None or int(match["size"]) <= int(match["limit"]):
        return False
    bare = Envelope(workload=env.workload, status="error", started_at=env.started_at,
                    finished_at=env.finished_at, host=env.host, backend=env.backend,
                    compact=True, errors=env.errors)
    return env == bare


_WORST = {False: 0, None: 1, True: 2}


def _fold_per_card(env: Envelope) -> None:
    """Fold per-card checks and metrics into one per name, keeping what verdicts need.

    A node with eight cards reports eight of everything, which does not fit a
    4 KiB termination message.  Folded: each check keeps its worst outcome and
    the card that had it; each metric becomes a ``min`` and a ``max`` entry, so
    a threshold on the worst card is still judged correctly.
    """
    folded = env.aggregated_copy()
    env.checks, env.metrics, env.aggregated = folded.checks, folded.metrics, True


def _value(m: Metric) -> float:
    """The value of a metric that has one (the min/max of a fold)."""
    assert m.value is not None
    return m.value


# --- what ``to_compact_json`` sheds, in order, until the envelope fits ---------------------


def _drop_versions(env: Envelope) -> None:
    env.versions = {}


def _drop_stats(env: Envelope) -> None:
    for m in env.metrics:
        m.stats = None


def _drop_device_fields(env: Envelope) -> None:
    for d in env.devices:
        d.fields.clear()


def _shorten_details(env: Envelope) -> None:
    for c in env.checks:
        c.detail = c.detail[:80]


def _drop_detail_metrics(env: Envelope) -> None:
    env.metrics = [m for m in env.metrics if m.labels.get("detail") != "true"]


def _drop_devices(env: Envelope) -> None:
    env.devices = []


_SHEDDING = (_drop_versions, _drop_stats, _drop_device_fields, _shorten_details, _drop_detail_metrics,
             _drop_devices, _fold_per_card)


class EnvelopeError(ValueError):
    """The output of a workload could not be read as an envelope."""


def parse_envelope(text: str) -> Envelope:
    """Parse one envelope from JSON text, with a reason a user can act on."""
    text = text.strip()
    if not text:
        raise EnvelopeError("empty result")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(f"result is not JSON ({exc.msg} at char {exc.pos}); "
                            f"it starts with {text[:60]!r}") from None
    if not isinstance(raw, dict):
        raise EnvelopeError(f"result is a JSON {type(raw).__name__}, not an object")
    version = raw.get("apiVersion")
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"result apiVersion is {version!r}, expected {ENVELOPE_VERSION!r}")
    try:
        # Strict: a boolean must be JSON true/false, a number a JSON number, a string a string
        # (lax mode would read "yes", 1 or "on" as true and "100" as a number).  Datetimes are
        # ISO strings in JSON, which strict JSON validation reads; an int is a valid float.
        return Envelope.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise EnvelopeError(_describe(exc)) from None


_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number", list: "array",
               dict: "object", type(None): "null"}


def _describe(exc: ValidationError) -> str:
    """The first problem of a failed validation: where (``checks.0.ok``), what, and what was there."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "envelope"
    msg = first["msg"]
    if first["type"] in _TYPE_ERRORS:  # say what JSON type was there; validators' own messages say enough
        value = first.get("input")
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        msg += f", got {_JSON_TYPES.get(type(value), type(value).__name__)} {shown}"
    more = len(errors) - 1
    return f"invalid result at {where}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


_TYPE_ERRORS = {"bool_type", "int_type", "float_type", "string_type", "datetime_type", "dict_type",
                "list_type", "model_type", "literal_error", "int_from_float", "scalar_type"}


def find_envelope_in_output(output: str) -> Envelope:
    """Find the envelope line in a workload's stdout (or a pod's log)."""
    lines = [ln for ln in output.splitlines() if ln.startswith(ENVELOPE_MARKER)]
    if not lines:
        tail = output.strip().splitlines()[-1:] or [""]
        raise EnvelopeError(f"no result envelope in the output; last line was {tail[0][:200]!r}")
    if len(lines) > 1:
        raise EnvelopeError(f"{len(lines)} result envelopes in the output; expected one")
    return parse_envelope(lines[0][len(ENVELOPE_MARKER):])


def now() -> datetime:
    return datetime.now(timezone.utc)
