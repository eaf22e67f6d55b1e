"""A stand-in workload for the operator benchmark: answers at once with a valid envelope.

Invoked as ``python fake_workload.py -m cardeval_workloads <workload> --profile ...`` (the
operator's CARDEVAL_WORKLOAD_PYTHON is ``python bench/fake_workload.py``), so the operator,
not the workloads, is what the benchmark measures.  Standard library only: it starts fast.
"""

import json
import os
import sys
from datetime import datetime, timezone

MARKER = "::cardeval-envelope::"


def main() -> int:
    args = sys.argv[1:]
    workload = args[args.index("cardeval_workloads") + 1] if "cardeval_workloads" in args else args[0]
    t = datetime.now(timezone.utc).isoformat()
    envelope = {"apiVersion": "cardeval.io/envelope/v1", "workload": workload, "status": "ok",
                "startedAt": t, "finishedAt": t, "host": os.uname().nodename, "backend": "cpu",
                "profile": "quick",
                "checks": [{"name": "bench.fake", "ok": True, "detail": "benchmark stand-in"}]}
    path = os.environ.get("TERMINATION_MESSAGE_PATH")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({**envelope, "compact": True}))
    print(MARKER + json.dumps(envelope), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
