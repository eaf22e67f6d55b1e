"""``python -m cardeval_workloads <workload> ...`` — see :mod:`.harness.cli`."""

import sys

from cardeval_workloads.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
