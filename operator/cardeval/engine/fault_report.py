"""Whether the executor observed and reported the faults of the resume test (6.2.4.a, 8.3.4.1 i).

8.3.4.1 i asks that the *system* diagnose and report the fault, which the
training process cannot do about its own death. So ``resume.fault_reported`` is
decided here, from what the executor saw of the run — the operator from the
pods (the container's restart count and its terminated state's reason and exit
code; the pod it deleted and the one the Job controller made in its place), the
local executor from its processes (exit status; the process it stopped and the
one it started after) — against the faults the run says it went through (its
``resume.fault`` metrics). Each fault needs its observation, in order: a
``kill`` a process that ended with a non-zero exit and was restarted in place,
a ``delete`` a process stopped from outside and replaced. The check's detail is
the diagnosis as reported (the operator also posts it as an Event).

A run without a usable result gets no check (its error already judges the
clause); a usable run whose faults were not all observed fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cardeval.engine.facts import WorkloadRun
from cardeval_workloads import resume_protocol as protocol
from cardeval_workloads.envelope import Check

#: What an observation is: the process ended and was started again in place (a container restart),
#: or it was stopped from outside and another took its place (a pod deleted and replaced).
RESTARTED, REPLACED = "restarted", "replaced"
#: The observation each fault the run reports must have.
OBSERVATION_OF = {"kill": RESTARTED, "delete": REPLACED}


@dataclass(frozen=True)
class Observation:
    """One end of the run's process, as its executor saw it."""

    kind: str  # RESTARTED | REPLACED
    #: What ended: "container workload of pod p-1", "process 4242".
    what: str
    exit_code: int | None
    #: The terminated state's reason ("Error", "OOMKilled"), or who stopped it and why.
    reason: str
    #: What came after: "restartCount 1", "pod p-2 created by the Job controller".
    then: str

    def describe(self) -> str:
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        return f"{self.what} ended ({self.reason}, {code}); {self.then}"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "what": self.what, "exitCode": self.exit_code, "reason": self.reason,
                "then": self.then}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Observation:
        code = raw.get("exitCode")
        return cls(str(raw["kind"]), str(raw["what"]), int(code) if isinstance(code, int) else None,
                   str(raw.get("reason", "")), str(raw.get("then", "")))


def faults_of(run: WorkloadRun) -> list[str]:
    """The faults the run says it went through, in order (its ``resume.fault`` metrics by attempt)."""
    if run.envelope is None:
        return []
    metrics = [m for m in run.envelope.metrics if m.name == protocol.FAULT_METRIC]
    metrics.sort(key=lambda m: int(m.labels.get("attempt", "0")))
    return [m.labels.get("kind", "") for m in metrics]


def report(run: WorkloadRun, observed: Sequence[Observation], executor: str) -> WorkloadRun:
    """``run`` with the ``resume.fault_reported`` check added (unchanged when it has no usable result)."""
    if not run.usable or run.envelope is None:
        return run
    faults = faults_of(run)
    left = list(observed)
    matched, missing = [], []
    for fault in faults:
        want = OBSERVATION_OF.get(fault)
        found = next((o for o in left if o.kind == want and (o.exit_code != 0 or want == REPLACED)), None)
        if found is None:
            missing.append(fault)
            continue
        left.remove(found)
        matched.append(f"the {fault} fault: {found.describe()}")
    if not faults:
        ok, text = False, "the run reports no fault, so there was nothing to diagnose"
    elif missing:
        ok, text = False, (f"{executor} did not observe the {', '.join(missing)} fault(s) the run went through"
                           + (f"; it saw: {'; '.join(o.describe() for o in observed)}" if observed else ""))
    else:
        ok, text = True, f"{executor} observed and reported " + "; ".join(matched)
    if left and ok:
        text += "; also: " + "; ".join(o.describe() for o in left)
    check = Check(name=protocol.FAULT_REPORTED, ok=ok, detail=text[:1024], observed=len(observed) - len(left),
                  expected=len(faults))
    envelope = run.envelope.model_copy(update={"checks": [*run.envelope.checks, check]})
    return WorkloadRun(run.workload, envelope=envelope)
