"""``infer-lm``: generation latency of a small language model — time to first token and per output token.

6.3.5.1's latency for a generative task (8.4.5.2 h 2: stream 1, requests
one after another) and 6.3.5.2's throughput in tokens. The model is
:mod:`._lm`'s causal transformer, trained on the card to its perplexity
target (default 1.15 × the source's own) before anything is timed; a model
that missed it leaves every figure unavailable, with the reason (the method
measures a model that reached its accuracy).

Each request is a prompt of ``prompt`` tokens from the held-out sequences,
decoded greedily for ``new_tokens`` tokens, the whole context recomputed each
step (the model has no key-value cache), on the card, the chosen token
copied to the host each step (as a server returns it):

* ``infer_lm.ttft_ms`` — prompt on the host to the first token on the host,
  median over ``requests`` batch-1 requests (p90 as a label);
* ``infer_lm.tpot_ms`` — the steady state: (last token − first token) /
  (new tokens − 1), median over the requests;
* ``infer_lm.tokens_per_s`` — generated tokens over the requests' time.
* Shown: seed 003's grid, scaled down: ``infer_lm.grid_tokens_per_s`` for
  each concurrency (requests decoded together as one batch) × prompt length ×
  output length, with the cell's first-token latency as a label, and
  ``infer_lm.best_tokens_per_s`` — the best throughput whose first token
  came within each of seed 003's bounds (≤ 500 ms, ≤ 1 s, ≤ 3 s, any).

Test hook: ``corrupt_tokens=true`` trains on shuffled tokens, so the model
misses its target and no latency is claimed.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.profiles import merged

from . import _lm, _training

NAME = "infer-lm"
TOPOLOGY = "card"

CHECKS = ()
METRICS = ("infer_lm.ttft_ms", "infer_lm.tpot_ms", "infer_lm.tokens_per_s")
SHOWN = ("infer_lm.perplexity", "infer_lm.grid_tokens_per_s", "infer_lm.best_tokens_per_s")

PARAMS = {
    "perplexity_ratio": Param(float, None, f"held-out perplexity the model must reach first, over the source's "
                              f"(default {_lm.DEFAULT_PERPLEXITY_RATIO:g})"),
    "requests": Param(int, None, "batch-1 requests instead of the profile's"),
    "prompt": Param(int, 8, "prompt tokens of each request"),
    "new_tokens": Param(int, 16, "tokens generated per request"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1: see _training.cpu_threads)"),
    "corrupt_tokens": Param(bool, False, "TEST HOOK: train on shuffled tokens (the model misses its target)"),
}

_SIZES = dict(batch=64, lr=3e-3, max_epochs=12)
PROFILES = {
    "quick": {"cpu": dict(requests=64, **_SIZES), "accelerator": dict(requests=256, **_SIZES)},
    "standard": {"cpu": dict(requests=256, **_SIZES), "accelerator": dict(requests=1024, **_SIZES)},
    "full": {"cpu": dict(requests=1024, **_SIZES), "accelerator": dict(requests=1024, **_SIZES)},
}

#: Seed 003's grid, scaled to the model's 32-token context: concurrency × prompt × output tokens.
GRID_CONCURRENCY = (1, 4, 16)
GRID_PROMPT = (4, 12)
GRID_OUTPUT = (8, 16)
#: Seed 003's first-token-latency bands (seconds; the last is "more").
BANDS_S = (0.5, 1.0, 3.0)


def run(ctx: RunContext) -> None:
    prompt, new_tokens = int(ctx.params["prompt"]), int(ctx.params["new_tokens"])
    if prompt < 2 or new_tokens < 2 or prompt + new_tokens > _lm.LENGTH:
        raise UsageError(f"--param prompt={prompt} and new_tokens={new_tokens}: each at least 2, together at most "
                         f"the model's context of {_lm.LENGTH}")
    _training.cpu_threads(ctx)
    corpus = _lm.corpus()
    ctx.per_device(lambda index: _card(ctx, index, corpus))


def _card(ctx: RunContext, index: int, corpus: _lm.Corpus) -> None:
    out = ctx.out
    out.device(ctx.identity(index))
    cfg = merged(ctx.sizes, ctx.params, "requests")
    prompt, new_tokens = int(ctx.params["prompt"]), int(ctx.params["new_tokens"])
    ratio = float(ctx.params.get("perplexity_ratio") or _lm.DEFAULT_PERPLEXITY_RATIO)
    device = ctx.accel.device(index)
    sync = lambda: ctx.accel.synchronize(index)  # noqa: E731 - a short callback
    trained = _lm.train(_lm.Run(
        corpus=corpus, device=device, target_perplexity=ratio * corpus.source.perplexity,
        max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]), seed=_lm.SOURCE_SEED,
        synchronize=sync, corrupt_tokens=bool(ctx.params.get("corrupt_tokens"))))
    ctx.log.info("model for generation: %s", trained.outcome.summary())
    out.metric("infer_lm.perplexity", trained.outcome.perplexity, "perplexity", device=index,
               labels={"target": f"{trained.outcome.target_perplexity:.4f}"})
    if not trained.outcome.reached:
        why = f"the model did not reach its target, so its latency is not the method's: {trained.outcome.summary()}"
        for name, unit in (("infer_lm.ttft_ms", "ms"), ("infer_lm.tpot_ms", "ms"),
                           ("infer_lm.tokens_per_s", "tokens/s")):
            out.metric(name, None, unit, device=index, unavailable=why)
        return
    module = trained.module
    prompts = corpus.validation
    with torch.no_grad():
        _decode(module, prompts[:1, :prompt], new_tokens, device, sync)  # untimed: first-call costs
        timings = [_decode(module, prompts[r % len(prompts)][None, :prompt], new_tokens, device, sync)
                   for r in range(int(cfg["requests"]))]
    where = {"requests": str(len(timings)), "prompt_tokens": str(prompt), "new_tokens": str(new_tokens),
             "decoding": "greedy, batch 1, context recomputed each step (no KV cache)"}
    first = [t[0] * 1e3 for t in timings]
    per_token = [(t[1] - t[0]) / (new_tokens - 1) * 1e3 for t in timings]
    out.metric("infer_lm.ttft_ms", statistics.median(first), "ms", device=index,
               labels={**where, "p90": f"{_p90(first):.4g}", "timed": "prompt on the host to the first token on it"})
    out.metric("infer_lm.tpot_ms", statistics.median(per_token), "ms", device=index,
               labels={**where, "p90": f"{_p90(per_token):.4g}",
                       "timed": "(last token - first token) / (new tokens - 1)"})
    out.metric("infer_lm.tokens_per_s", new_tokens * len(timings) / sum(t[1] for t in timings), "tokens/s",
               device=index, labels=where)
    _grid(ctx, index, module, prompts, device, sync)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _decode(module: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, device: torch.device,
            sync: Any) -> tuple[float, float]:
    """Greedy decoding of ``new_tokens`` after ``prompt`` (its rows decoded together): seconds to the first
    and to the last token."""
    sync()
    t0 = time.perf_counter()
    context = prompt.to(device)
    first = 0.0
    for step in range(new_tokens):
        token = module(context)[:, -1].argmax(dim=-1, keepdim=True)
        token.cpu()  # the token reaches the host, as a server returns it
        if step == 0:
            first = time.perf_counter() - t0
        context = torch.cat([context, token], dim=1)
    return first, time.perf_counter() - t0


def _grid(ctx: RunContext, index: int, module: torch.nn.Module, prompts: torch.Tensor, device: torch.device,
          sync: Any) -> None:
    """Seed 003's concurrency × input × output grid, and the best throughput in each first-token band."""
    cells = []
    with torch.no_grad():
        for concurrency in GRID_CONCURRENCY:
            for prompt in GRID_PROMPT:
                for output in GRID_OUTPUT:
                    first, total = _decode(module, prompts[:concurrency, :prompt], output, device, sync)
                    rate = concurrency * output / total
                    cells.append((first, rate))
                    ctx.out.metric("infer_lm.grid_tokens_per_s", rate, "tokens/s", device=index, labels={
                        "concurrency": str(concurrency), "prompt_tokens": str(prompt), "output_tokens": str(output),
                        "ttft_ms": f"{first * 1e3:.4g}"})
    for upper in (*BANDS_S, math.inf):
        inside = [rate for first, rate in cells if first <= upper]
        band = f"ttft <= {upper:g} s" if upper != math.inf else "any ttft"
        if inside:
            ctx.out.metric("infer_lm.best_tokens_per_s", max(inside), "tokens/s", device=index,
                           labels={"band": band, "cells": str(len(inside))})
        else:
            ctx.out.metric("infer_lm.best_tokens_per_s", None, "tokens/s", device=index, labels={"band": band},
                           unavailable="no cell of the grid had its first token within this bound")
