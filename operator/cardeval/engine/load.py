"""Reading an evaluation file, with one-line errors that name the field.

Everything the API server would refuse (schema, CEL) is refused here too, and
so is what only the catalog knows: a threshold key the clause does not have,
evidence for a clause that must be measured, a pattern that selects nothing.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from cardeval.api.models import API_VERSION, KIND, CardEvaluation, error_location
from cardeval.engine import catalog
from cardeval.engine.planner import given_params, needed_seconds, workload_params


class InvalidInput(ValueError):
    """The evaluation cannot be run as written; the message names the field."""


def load_file(path: str | Path) -> CardEvaluation:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{p}: cannot read: {exc}") from None
    return load_text(text, str(p))


def load_text(text: str, source: str = "<input>") -> CardEvaluation:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{source}: not valid YAML{where}: {problem}") from None
    if not docs:
        raise InvalidInput(f"{source}: empty document; expected a {KIND}")
    if len(docs) > 1:
        raise InvalidInput(f"{source}: {len(docs)} YAML documents; expected exactly one {KIND}")
    return from_mapping(docs[0], source)


def from_mapping(doc: object, source: str = "<input>") -> CardEvaluation:
    if not isinstance(doc, dict):
        raise InvalidInput(f"{source}: the document is a {_kind_of(doc)}, expected a mapping (a {KIND})")
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidInput(f"{source}: apiVersion: expected {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != KIND:
        raise InvalidInput(f"{source}: kind: expected {KIND!r}, got {doc.get('kind')!r}")
    try:
        evaluation = validate_document(doc)
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {describe_validation_error(exc)}") from None
    except (TypeError, ValueError) as exc:  # a value no JSON document can hold (bytes, a set, NaN)
        raise InvalidInput(f"{source}: not a JSON document: {exc}") from None
    check_against_catalog(evaluation, source)
    return evaluation


def validate_document(doc: dict[str, object]) -> CardEvaluation:
    """The document as the API server judges it (schema and CEL; the catalog's checks are separate):

    * strictly, as JSON: "2" is not an integer there nor "yes" a boolean, so not here either (pydantic's lax
      mode would take both); YAML's unquoted dates and times are the text they were;
    * a ``null`` is an absent field (no field of the CRD is nullable: the API server drops nulls);
    * an integer past int64 is a number, as the API server reads it. ``3.0`` where an integer goes is refused:
      the API server's schema takes it, and then its CEL rules fail on it where they read the field."""
    text = json.dumps(_without_nulls(doc), default=_yaml_scalar, allow_nan=False)
    return CardEvaluation.model_validate_json(text, strict=True)


def _without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2 ** 63:
        return float(value)  # past int64 the API server reads a number, not an integer
    return value


def _yaml_scalar(value: object) -> str:
    """What YAML parsed that JSON has not: an unquoted date or time, kept as the text it was."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def describe_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = error_location(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    msg = msg.removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def check_against_catalog(evaluation: CardEvaluation, source: str) -> None:
    spec = evaluation.spec
    for i, pattern in enumerate(spec.clauses.include):
        if not any(catalog.matches(c.id, [pattern]) for c in catalog.clauses_for(spec.card_type)):
            raise InvalidInput(f"{source}: spec.clauses.include[{i}]: {pattern!r} selects no clause "
                               f"of a {spec.card_type} card")
    for clause_id, values in spec.thresholds.items():
        clause = catalog.BY_ID.get(clause_id)
        if clause is None or not clause.applies_to(spec.card_type):
            raise InvalidInput(f"{source}: spec.thresholds.{clause_id}: no such clause for a "
                               f"{spec.card_type} card")
        for key in values:
            if key not in clause.thresholds:
                known = ", ".join(sorted(clause.thresholds)) or "none"
                raise InvalidInput(f"{source}: spec.thresholds.{clause_id}.{key}: clause {clause_id} has no "
                                   f"threshold {key!r} (it has: {known})")
    check_deadlines(evaluation, source)
    check_shared_runs(evaluation, source)
    for i, ev in enumerate(spec.evidence):
        clause = catalog.BY_ID.get(ev.clause)
        if clause is None or not clause.applies_to(spec.card_type):
            raise InvalidInput(f"{source}: spec.evidence[{i}].clause: no clause {ev.clause} for a "
                               f"{spec.card_type} card")
        if not clause.attestable:
            raise InvalidInput(f"{source}: spec.evidence[{i}].clause: {ev.clause} is measured, "
                               "it cannot be attested")


def check_deadlines(evaluation: CardEvaluation, source: str) -> None:
    """A run of a requested duration (the stress test) must fit the work item's time limit."""
    spec = evaluation.spec
    if spec.item_timeout_seconds is None:
        return
    selected, _ = catalog.select(spec.card_type, spec.clauses.include, spec.clauses.exclude)
    for clause in selected:
        needed = needed_seconds(workload_params([clause], spec))
        if needed > spec.item_timeout_seconds:
            raise InvalidInput(f"{source}: spec.itemTimeoutSeconds: {spec.item_timeout_seconds} s cannot hold the "
                               f"{clause.id} run that spec.thresholds asks for ({needed} s with its setup); "
                               "raise it or leave it unset")


def check_shared_runs(evaluation: CardEvaluation, source: str) -> None:
    """Clauses served by one run of a workload must give it the same parameter: one ``train`` run
    trains to one target, so 6.2.3.a and 6.2.1.c cannot ask for two (either verdict would then rest
    on a run made for the other)."""
    spec = evaluation.spec
    selected, _ = catalog.select(spec.card_type, spec.clauses.include, spec.clauses.exclude)
    first: dict[tuple[str, str], tuple[str, str, str]] = {}
    for clause in selected:
        for given in given_params(clause, spec):
            run = (given.workload, given.param)
            if run not in first:
                first[run] = (clause.id, given.key, given.value)
                continue
            other, other_key, other_value = first[run]
            if given.value != other_value:
                raise InvalidInput(
                    f"{source}: spec.thresholds.{clause.id}.{given.key}: {given.value} differs from {other}'s "
                    f"{other_key} ({other_value}); both clauses are judged on one {given.workload} run, which "
                    f"takes one {given.param}: give them the same value")


def _kind_of(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)
