"""``python -m cardeval.operator``: run the operator (settings from the environment, see ``config``)."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf

from cardeval.operator import handlers  # noqa: F401  (registers the kopf handlers)
from cardeval.operator.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cardeval.operator",
                                     description="The cardeval operator (CardEvaluation → Jobs → verdicts).")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    kopf.configure(verbose=args.verbose)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:  # "Handler 'on_event' succeeded." on every watch event is noise
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = Settings.from_env()  # fail fast on a bad setting, before connecting
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    # CardEvaluations are cluster-scoped (kopf serves them cluster-wide in any mode); Jobs are watched
    # only in the operator's namespace, which the chart's Role covers.
    kopf.run(namespaces=[settings.namespace], standalone=True, liveness_endpoint=liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
