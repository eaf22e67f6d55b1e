"""`python -m cardeval_testbed up`: a test cluster for humans and demos.

Builds missing binaries, starts the control plane and a node agent with two demo nodes
(`demo-small`: 1 x example.com/accel, `demo-large`: 4 x example.com/accel), prints the
kubeconfig path and an `export KUBECONFIG=...` line, and runs until Ctrl-C, then tears
everything down (processes and temp dir).

`python -m cardeval_testbed build` only builds the binaries and prints their paths.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from .binaries import ensure_binaries
from .controlplane import ControlPlane

DEMO_NODES = [
    {"name": "demo-small", "capacity": {"example.com/accel": "1"}, "labels": {"cardeval.io/demo": "small"}},
    {"name": "demo-large", "capacity": {"example.com/accel": "4"}, "labels": {"cardeval.io/demo": "large"}},
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cardeval_testbed")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster with two demo nodes until Ctrl-C")
    up.add_argument("--no-nodes", action="store_true", help="start no node agent")
    up.add_argument("--kubeconfig-out", help="also copy the admin kubeconfig here")
    sub.add_parser("build", help="build the binaries that are missing and print their paths")
    args = p.parse_args(argv)

    if args.cmd == "build":
        for name, path in ensure_binaries().as_dict().items():
            print(f"{name}={path}")
        return 0

    # Ctrl-C and SIGTERM both end the wait below; teardown runs in `finally`.
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background (SIGINT ignored)
    cp = ControlPlane()
    try:
        cp.start()
        agent = None if args.no_nodes else cp.node_agent(DEMO_NODES)
        kubeconfig = Path(cp.kubeconfig)
        if args.kubeconfig_out:
            shutil.copy(kubeconfig, args.kubeconfig_out)
            kubeconfig = Path(args.kubeconfig_out).resolve()
        print(f"control plane ready in {cp.started_in:.1f}s at {cp.server}", flush=True)
        if agent is not None:
            print(f"nodes: {', '.join(agent.names)} (agent log: {agent.log})")
        print(f"kubeconfig: {kubeconfig}")
        print(f"kubectl/helm: {cp.bin_dir}")
        print(f"logs: {cp.logs}")
        print()
        print(f"export KUBECONFIG={kubeconfig} PATH={cp.bin_dir}:$PATH")
        print()
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping...", file=sys.stderr)
        return 0
    finally:
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
