"""Our training throughput beside a bare PyTorch loop of the same model, same data, one run.

    PYTHONPATH=operator:workloads python bench/train_vs_bare.py [--epochs 8] [--rounds 5] [--threads 1] [--quick]

"Ours" is :func:`cardeval_workloads.suite._training.train` — the function the
``train`` workload calls for every run — on the CPU, fp32, with the workload's
quick-profile batch and learning rate, for a fixed ``--epochs`` with no early
stop. Validation is kept out of the figure by handing it the training split
with an *empty* validation set: the loop still runs its per-epoch validation
code, on zero images (a few tens of microseconds an epoch, left in ours, so the
ratio errs against us), its accuracy is NaN and never reaches the target, so
every epoch runs. ``samples / train_s`` is then what ``train.throughput``
times, less the validation passes.

The reference shares no code with the harness: the same CNN written out here
in plain torch (its initial weights are checked equal to the workload's model
at the same seed), ``torch.optim.Adam`` at the same learning rate, the same
training tensors, the same batch and dropped last partial batch, the same
seeded per-epoch permutation, in a plain ``for`` loop timed with
``perf_counter``. Both build their model and optimizer before the clock
starts, and both run at the same torch thread count (``--threads``, default 1,
as the workload). After the run the two models' final weights are compared:
equal weights mean both sides did the same work.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which this machine sets) are removed only
where a reference uses OpenBLAS (numpy, in ``matmul_vs_numpy.py``); here both
sides are torch in one process, whose BLAS is printed (MKL on x86 wheels), so
they are left as they are for both and printed.

One untimed epoch of each side comes first (a process's first calls set up
kernels and allocations). The sides alternate in rounds (which goes first alternates too), with a short
pause before each, so drift and bursts of load from elsewhere hit both; the
figure is the median over rounds of each round's ours / bare (goal >= 0.97).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))

import torch  # noqa: E402

from bare_timing import load_note  # noqa: E402
from cardeval_workloads.suite import _training, train  # noqa: E402

HANDICAP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
IDLE_S = 0.3
SEED = 20240901


def bare_model(seed: int) -> torch.nn.Module:
    """The digits CNN, written out: two 3x3 convolutions, 2x2 max-pool, two linear layers."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


def bare_train(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float,
               seed: int) -> tuple[float, torch.nn.Module]:
    """A plain training loop; returns (samples/s of the training steps, the trained model)."""
    model = bare_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    steps = len(y) // batch
    samples = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for i in range(steps):
            idx = perm[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            samples += batch
    loss.item()
    seconds = time.perf_counter() - t0
    return samples / seconds, model


def ours_train(data: _training.Case, epochs: int, batch: int, lr: float,
               seed: int) -> tuple[float, torch.nn.Module]:
    """``_training.train`` for exactly ``epochs`` epochs (empty validation set: no early stop, no validation)."""
    no_val = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    run = _training.Run(data=no_val, device=torch.device("cpu"), precision=_training.Precision("fp32", "cpu"),
                        target=2.0, max_epochs=epochs, batch=batch, lr=lr, seed=seed)
    trained = _training.train(run)
    out = trained.outcome
    assert out.epochs == epochs and not out.diverged, out.summary()
    return out.samples_per_s, trained.module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8, help="epochs per measurement (21 steps of 64 each)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides (the workload's default: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 1 epoch")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.rounds = 1, 2

    torch.set_num_threads(args.threads)
    cfg = train.PROFILES["quick"]["cpu"]
    batch, lr = int(cfg["batch"]), float(cfg["lr"])
    data = _training.digits()
    x, y = data.x_train, data.y_train
    for a, b in zip(bare_model(SEED).state_dict().values(), _training.model(SEED).state_dict().values(),
                    strict=True):
        assert a.shape == b.shape and torch.equal(a, b), "the written-out model differs from the workload's"
    blas = next((p.split("=")[1] for p in torch.__config__.show().replace(",", " ").split() if
                 p.startswith("BLAS_INFO=")), "unknown")
    print(f"torch {torch.__version__} (BLAS {blas}, threads {torch.get_num_threads()}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}); os.cpu_count={os.cpu_count()}; "
          + ", ".join(f"{k}={os.environ.get(k, '<unset>')}" for k in HANDICAP))
    print(f"case: {_training.CASE}, {len(y)} training images, batch {batch} ({len(y) // batch} steps/epoch), "
          f"Adam lr {lr:g}, fp32, {args.epochs} epochs per measurement, {args.rounds} rounds")

    # Untimed warm-up of each side: the first calls in a process pay for kernel and allocator set-up
    # (the first measurement of whichever side ran first came out at half speed without it).
    ours_train(data, 1, batch, lr, SEED)
    bare_train(x, y, 1, batch, lr, SEED)
    rounds = []
    ours_model = bare = None
    for k in range(args.rounds):
        sides = {}
        for side in (("ours", "bare") if k % 2 == 0 else ("bare", "ours")):
            time.sleep(IDLE_S)
            if side == "ours":
                sides[side], ours_model = ours_train(data, args.epochs, batch, lr, SEED)
            else:
                sides[side], bare = bare_train(x, y, args.epochs, batch, lr, SEED)
        ratio = sides["ours"] / sides["bare"]
        rounds.append({"ours": round(sides["ours"], 1), "bare": round(sides["bare"], 1), "ratio": round(ratio, 4)})
        print(f"round {k + 1}: ours {sides['ours']:.0f} samples/s, bare {sides['bare']:.0f} samples/s, "
              f"ours/bare {ratio:.3f}")
    diff = max(float((a - b).abs().max()) for a, b in
               zip(ours_model.state_dict().values(), bare.state_dict().values(), strict=True))
    ratios = sorted(r["ratio"] for r in rounds)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1:][:2]) / 2
    print(f"median ours/bare over {len(rounds)} rounds {median:.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}; "
          f"goal >= 0.97); final weights ours vs bare: max |diff| {diff:.3g}")
    print(load_note())
    print(json.dumps({"bench": "train_vs_bare", "unit": "samples/s", "threads": args.threads, "batch": batch,
                      "epochs": args.epochs, "rounds": rounds, "ratio": round(median, 4),
                      "weights_max_diff": diff, "goal": 0.97}))


if __name__ == "__main__":
    main()
