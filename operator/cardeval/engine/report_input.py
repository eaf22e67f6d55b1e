"""What ``cardeval report`` reads: a finished evaluation, from either place it is written.

* a ``cardeval run`` output folder: ``status.json`` and ``nodes/<node>.json``;
* a JSON file holding what ``cardeval run --json`` and ``cardeval results NAME`` print: ``{"status": ...,
  "nodes": [...]}`` (``status`` the resource's status, each node a ``NodeResult``).

Both are read into the API models, so a report never depends on which one it came from.  Anything else is
refused with ``InvalidInput`` naming the file and the field (the CLI's exit code 2), never rendered as an
empty report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cardeval.api.models import EvaluationStatus, NodeResult
from cardeval.engine.facts import WorkloadRun
from cardeval.engine.load import InvalidInput, describe_validation_error
from cardeval.engine.series import series_of
from cardeval_workloads.envelope import EnvelopeError, parse_envelope

_M = TypeVar("_M", bound=BaseModel)


@dataclass
class Evaluated:
    """One finished evaluation: its status and every node's clause results."""

    #: Where it was read from, for the report's heading and its errors.
    source: str
    status: EvaluationStatus
    nodes: list[NodeResult]

    @property
    def name(self) -> str:
        return self.nodes[0].evaluation if self.nodes else self.source


def load_results(path: str | Path) -> Evaluated:
    p = Path(path)
    if p.is_dir():
        return _from_run_dir(p)
    if not p.exists():
        raise InvalidInput(f"{p}: no such file or directory (expected a cardeval run output folder or the JSON of "
                           "cardeval run --json / cardeval results)")
    return from_document(_read_json(p), str(p))


def _read_json(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{p}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{p}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def from_document(doc: Any, source: str) -> Evaluated:
    """The JSON object of ``run --json`` / ``results``, checked field by field."""
    if not isinstance(doc, dict):
        raise InvalidInput(f"{source}: the document is a JSON {_json_type(doc)}, expected an object with "
                           "\"status\" and \"nodes\" (cardeval run --json / cardeval results)")
    for key in ("status", "nodes"):
        if key not in doc:
            raise InvalidInput(f"{source}: {key}: required field is missing (expected the JSON of cardeval run "
                               "--json / cardeval results)")
    if not isinstance(doc["nodes"], list):
        raise InvalidInput(f"{source}: nodes: expected a list, got a JSON {_json_type(doc['nodes'])}")
    status = _validated(EvaluationStatus, doc["status"], source, "status")
    nodes = [_validated(NodeResult, n, source, f"nodes[{i}]") for i, n in enumerate(doc["nodes"])]
    if not nodes:
        raise InvalidInput(f"{source}: nodes: empty; there is no node's result to report")
    return Evaluated(source, status, nodes)


def _from_run_dir(d: Path) -> Evaluated:
    status_file = d / "status.json"
    if not status_file.is_file():
        raise InvalidInput(f"{d}: no status.json (expected a cardeval run output folder)")
    status = _validated(EvaluationStatus, _read_json(status_file), str(status_file), "")
    files = sorted((d / "nodes").glob("*.json"))
    if not files:
        raise InvalidInput(f"{d / 'nodes'}: no node result (nodes/<node>.json) in this run output folder")
    nodes = [_validated(NodeResult, _read_json(f), str(f), "") for f in files]
    for node in nodes:
        if not node.series:  # written before the results kept their curves: read them from the envelopes
            node.series = series_of(_envelopes(d / "envelopes"))
    return Evaluated(str(d), status, nodes)


def _envelopes(d: Path) -> dict[str, WorkloadRun]:
    """The folder's workload envelopes that can be read (a run that failed wrote its error instead)."""
    runs = {}
    for f in sorted(d.glob("*.json")):
        try:
            runs[f.stem] = WorkloadRun(f.stem, envelope=parse_envelope(f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, EnvelopeError):
            continue
    return runs


def _validated(model: type[_M], value: Any, source: str, where: str) -> _M:
    """``value`` as ``model``; else the file, the field's path from the document's top (``nodes[0].results[3]
    .verdict``) and what is wrong with it."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        said = describe_validation_error(exc)
        top = "(document)"
        if where:
            said = where + said[len(top):] if said.startswith(top) else f"{where}.{said}"
        raise InvalidInput(f"{source}: {said}") from None


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
