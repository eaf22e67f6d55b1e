"""Our serving client's request rate beside a bare tritonclient loop, against the same MLServer, one run.

    PYTHONPATH=operator:workloads python bench/serving_client.py [--clients 4] [--seconds 3] [--rounds 5]
        [--protocol grpc|http] [--quick]

The server is the one the ``serving`` workload starts (:mod:`._serving_server`:
MLServer on loopback) with the digits classifier on the host CPU. "Ours" is
:func:`cardeval_workloads.suite._serving_load.closed_loop` — what
``serving.concurrent_correct`` and ``serving.qps`` measure with — sending
batch-1 requests that cycle through the held-out images, each answer checked
against its CPU reference and its latency kept. The reference shares no code
with it: ``--clients`` threads, each with its own ``tritonclient`` client and
one prepared request, calling ``infer`` in a plain loop for ``--seconds`` and
counting answers.

The sides alternate in rounds (which goes first alternates too), a short pause
before each; the figure is the median over rounds of ours / bare (goal ≥ 0.95:
our measuring and checking must not be what limits the rate). Both run in this
process against a server in another; on a 2-core machine they share the cores
with it, so the load average is printed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))

import numpy as np  # noqa: E402

from bare_timing import load_note  # noqa: E402
from cardeval_workloads.suite import _serving_load, _serving_models, _serving_server  # noqa: E402

IDLE_S = 0.3


def bare(protocol: str, url: str, model: _serving_models.Model, clients: int, seconds: float) -> float:
    """Answers per second of ``clients`` plain tritonclient loops, each re-sending one prepared request."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module  # type: ignore[no-redef]
    image = model.inputs[0].value[:1]
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def loop(rank: int) -> None:
        client = module.InferenceServerClient(url)
        request = module.InferInput(model.inputs[0].name, list(image.shape), "FP32")
        if protocol == "http":
            request.set_data_from_numpy(image, binary_data=False)
        else:
            request.set_data_from_numpy(image)
        wanted = [module.InferRequestedOutput(model.output, **({"binary_data": False} if protocol == "http" else {}))]
        barrier.wait()
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            client.infer(model.name, [request], outputs=wanted)
            n += 1
        counts[rank] = n
        client.close()

    threads = [threading.Thread(target=loop, args=(r,)) for r in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def ours(protocol: str, url: str, model: _serving_models.Model, clients: int, seconds: float) -> float:
    requests = []
    for j in range(model.samples):
        want = model.reference[j:j + 1]
        requests.append((model.name, [(t.name, t.value[j:j + 1]) for t in model.inputs], model.output,
                         lambda a, want=want: None if np.allclose(a.value, want, rtol=1e-2, atol=1e-2) else "wrong"))
    load = _serving_load.closed_loop(protocol, url, requests, clients, seconds)
    if not load.correct:
        raise SystemExit(f"our client saw wrong or failed answers: {load.summary()}")
    return load.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--protocol", choices=_serving_load.PROTOCOLS, default="grpc")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 1.0
    with tempfile.TemporaryDirectory(prefix="cardeval-bench-serving-") as tmp:
        work = Path(tmp)
        repository = work / "models"
        repository.mkdir()
        model = _serving_models.digits_classifier("cpu")
        model.write(repository)
        server = _serving_server.start(repository, work)
        try:
            _serving_load.Client("grpc", server.grpc_url).raw.load_model(model.name)
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            ours(args.protocol, url, model, args.clients, 0.5)  # warm both paths
            bare(args.protocol, url, model, args.clients, 0.5)
            rounds = []
            for r in range(args.rounds):
                sides = [("ours", ours), ("bare", bare)]
                result = {}
                for side, fn in (sides if r % 2 == 0 else sides[::-1]):
                    time.sleep(IDLE_S)
                    result[side] = fn(args.protocol, url, model, args.clients, args.seconds)
                result["ratio"] = result["ours"] / result["bare"]
                rounds.append(result)
                print(f"round {r + 1}: ours {result['ours']:.1f} req/s, bare {result['bare']:.1f} req/s, "
                      f"ratio {result['ratio']:.3f}", flush=True)
        finally:
            server.stop()
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(f"{server.describe()}; {args.protocol}, {args.clients} clients, {args.seconds:g} s a side; "
          f"{load_note()}")
    print(f"median ours / bare: {ratio:.3f} (goal >= 0.95)")
    print(json.dumps({"bench": "serving_client", "protocol": args.protocol, "clients": args.clients,
                      "ratio": round(ratio, 4), "rounds": rounds}))


if __name__ == "__main__":
    main()
