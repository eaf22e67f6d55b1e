"""``serving``: online serving over the Open Inference Protocol v2 (6.3.1.h, 8.4.1.7; seed 002 7.2.5).

A real serving runtime — MLServer, as a child process (:mod:`._serving_server`)
bound to the pod's address or loopback — serves three models of three of the
standard's tasks (:mod:`._serving_models`: image classification, recommendation,
language modelling), each placed on one of the pod's cards (round robin) by the
runtimes of :mod:`._serving_runtimes`. The client (:mod:`._serving_load`,
``tritonclient`` over HTTP and gRPC) runs beside it, in this process.

In the method's order:

* ``serving.models_ready`` (8.4.1.7 d, g) — every model was loaded through the
  repository API, one by one (a model that fails is reported with the
  server's error, the others go on), and each reports ready over HTTP and
  gRPC; the language model is trained while the server runs and added to the
  repository then, so the repository index must list it before it is loaded;
  at least three tasks ready;
* ``serving.infer_correct`` (e) — each ready model's whole held-out set
  served over HTTP and over gRPC: every answer within RTOL/ATOL of the CPU
  fp32 reference, the served answers' score meeting the model's target, and
  each answer computed where the model was placed (on a card: not the CPU,
  and for ONNX Runtime not its CPU provider — else undetermined, with the
  reason; the catalog makes that an ``Error``);
* ``serving.load_unload`` (f) — the recommender unloaded at run time (no
  longer ready, a request to it refused), loaded again (ready, its answers
  right again), and the language model's addition above;
* ``serving.concurrent_correct`` (h) — ``concurrency`` clients for
  ``duration_s`` over each protocol, batch-1 requests cycling through the
  models' held-out samples: every answer right, none failed. Shown: the
  request rate and latency percentiles (``serving.request_rate``,
  ``serving.latency_ms``).
* Shown, seed 002 7.2.5: ``serving.qps`` for each client count of
  ``qps_levels`` (batch-1 digits requests over gRPC) and ``serving.max_qps``
  — the highest rate whose mean latency stayed within ``latency_bound_ms``
  (seed 002 sets JMeter's average response time; default 100 ms, this
  product's).

A server that does not start is the run's error, with its log's tail. Test
hooks: ``wrong_answers=true`` makes the runtimes add 1 to every output (the
answers are wrong through the real path); ``bad_model=true`` adds a fourth
model whose ONNX file is unreadable (it must fail to load, alone).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.params import Param, int_list
from cardeval_workloads.harness.profiles import merged

from . import _lm, _onnx, _serving_load, _serving_models, _serving_server, _training
from ._serving_load import Answer, Client
from ._serving_models import Model

NAME = "serving"
TOPOLOGY = "node"

CHECKS = ("serving.models_ready", "serving.infer_correct", "serving.load_unload", "serving.concurrent_correct")
METRICS = ()
SHOWN = ("serving.model_score", "serving.request_rate", "serving.latency_ms", "serving.qps", "serving.max_qps")

DEFAULT_LATENCY_BOUND_MS = 100.0
MIN_TASKS = 3
#: Held-out samples per request when a whole set is served, and samples per model in the concurrent mix.
BATCH = 256
MIX_SAMPLES = 64
#: The language model trains to 1 % inside its target, so whether its served answers meet the target is not
#: decided by the rounding between the training loop and the exported program.
LM_TRAINING_MARGIN = 0.99

PARAMS = {
    "concurrency": Param(int, None, "concurrent clients of the concurrency check instead of the profile's"),
    "duration_s": Param(float, None, "seconds each load runs instead of the profile's"),
    "qps_levels": Param(int_list, None, "client counts of the maximum-QPS sweep instead of the profile's"),
    "latency_bound_ms": Param(float, DEFAULT_LATENCY_BOUND_MS, "mean latency within which the maximum QPS counts"),
    "perplexity_ratio": Param(float, None, f"the language model's target (default {_lm.DEFAULT_PERPLEXITY_RATIO:g})"),
    "start_timeout_s": Param(float, 120.0, "how long the server may take to come up"),
    "threads": Param(int, None, "torch CPU threads on the CPU (default 1)"),
    "wrong_answers": Param(bool, False, "TEST HOOK: the runtimes add 1 to every output"),
    "bad_model": Param(bool, False, "TEST HOOK: also deploy a model whose file is unreadable"),
}

_LM_SIZES = dict(batch=64, lr=3e-3, max_epochs=12)
PROFILES = {
    "quick": {"cpu": dict(concurrency=8, duration_s=2.0, qps_levels=[1, 2, 4, 8], **_LM_SIZES),
              "accelerator": dict(concurrency=32, duration_s=5.0, qps_levels=[1, 4, 16, 32, 64], **_LM_SIZES)},
    "standard": {"cpu": dict(concurrency=16, duration_s=5.0, qps_levels=[1, 2, 4, 8, 16], **_LM_SIZES),
                 "accelerator": dict(concurrency=64, duration_s=15.0, qps_levels=[1, 4, 16, 32, 64, 128],
                                     **_LM_SIZES)},
    "full": {"cpu": dict(concurrency=16, duration_s=15.0, qps_levels=[1, 2, 4, 8, 16, 32], **_LM_SIZES),
             "accelerator": dict(concurrency=128, duration_s=60.0, qps_levels=[1, 4, 16, 32, 64, 128, 256],
                                 **_LM_SIZES)},
}


def run(ctx: RunContext) -> None:
    _training.cpu_threads(ctx)
    cfg = merged(ctx.sizes, ctx.params, "concurrency", "duration_s", "qps_levels")
    for index in ctx.devices:
        ctx.out.device(ctx.identity(index))
    workdir = Path(tempfile.mkdtemp(prefix="cardeval-serving-"))
    try:
        _serve(ctx, cfg, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class _Deployment:
    """The models, where each was placed, and what became of each."""

    def __init__(self, ctx: RunContext, repository: Path) -> None:
        self.ctx = ctx
        self.repository = repository
        self.models: list[Model] = []
        self.placed: dict[str, int] = {}
        self.load_errors: dict[str, str] = {}
        self.hooks: dict[str, object] = {"wrong_answers": True} if ctx.params.get("wrong_answers") else {}

    def device_for(self, slot: int) -> tuple[int, str]:
        index = self.ctx.devices[slot % len(self.ctx.devices)]
        return index, str(self.ctx.accel.device(index))

    def add(self, build: Any, *args: Any) -> Model:
        index, device = self.device_for(len(self.models))
        model: Model = build(device, *args)
        model.extra.update(self.hooks)
        if not self.ctx.accel.is_accelerator:
            model.extra["threads"] = int(self.ctx.params.get("threads") or 1)
        model.write(self.repository)
        self.models.append(model)
        self.placed[model.name] = index
        return model

    def ready(self) -> list[Model]:
        return [m for m in self.models if m.name not in self.load_errors]


def _serve(ctx: RunContext, cfg: dict[str, Any], workdir: Path) -> None:
    repository = workdir / "models"
    repository.mkdir()
    deployment = _Deployment(ctx, repository)
    deployment.add(_serving_models.digits_classifier)
    deployment.add(_serving_models.recommender)
    broken = _write_broken(repository, deployment) if ctx.params.get("bad_model") else None
    server = _serving_server.start(repository, workdir, float(ctx.params.get("start_timeout_s") or 120.0))
    try:
        grpc = Client("grpc", server.grpc_url)
        http = Client("http", server.http_url)
        for model in list(deployment.models):
            _load(grpc, model.name, deployment)
        if broken is not None:
            _load(grpc, broken, deployment)
        added = _add_language_model(ctx, cfg, deployment, grpc, server)
        _check_ready(ctx, deployment, {"http": http, "grpc": grpc}, broken, server)
        _check_inference(ctx, deployment, {"http": http, "grpc": grpc})
        _check_load_unload(ctx, deployment, grpc, http, added)
        _check_concurrency(ctx, cfg, deployment, server)
        _measure_qps(ctx, cfg, deployment, server)
        if not server.alive():
            raise _serving_server.ServerFailed(f"MLServer exited during the run; its log ends:\n{server.log_tail()}")
        grpc.close()
        http.close()
    finally:
        server.stop()


def _write_broken(repository: Path, deployment: _Deployment) -> str:
    """TEST HOOK: a model directory whose ONNX file is not a graph (loading it must fail, alone)."""
    name = "broken-classifier"
    (repository / name).mkdir()
    (repository / name / "model.onnx").write_bytes(b"not an ONNX graph")
    _, device = deployment.device_for(0)
    (repository / name / "model-settings.json").write_text(
        '{"name": "%s", "implementation": "%s", "parameters": {"uri": "./model.onnx", "extra": {"device": "%s"}}}'
        % (name, _serving_models.ONNX_RUNTIME, device))
    return name


def _load(grpc: Client, name: str, deployment: _Deployment) -> None:
    try:
        grpc.raw.load_model(name)
    except Exception as exc:  # noqa: BLE001 - the server's reason, reported per model
        deployment.load_errors[name] = f"{exc}"[:300]


def _add_language_model(ctx: RunContext, cfg: dict[str, Any], deployment: _Deployment, grpc: Client,
                        server: _serving_server.Server) -> dict[str, Any]:
    """Train the language model while the server runs, add it to the repository, load it; what was seen."""
    ratio = float(ctx.params.get("perplexity_ratio") or _lm.DEFAULT_PERPLEXITY_RATIO)
    corpus = _lm.corpus()
    index, device = deployment.device_for(len(deployment.models))
    trained = _lm.train(_lm.Run(corpus=corpus, device=ctx.accel.device(index),
                                target_perplexity=LM_TRAINING_MARGIN * ratio * corpus.source.perplexity,
                                max_epochs=int(cfg["max_epochs"]), batch=int(cfg["batch"]), lr=float(cfg["lr"]),
                                seed=_lm.SOURCE_SEED, synchronize=lambda: ctx.accel.synchronize(index)))
    ctx.log.info("language model: %s", trained.outcome.summary())
    before = _index(grpc)
    model = deployment.add(_serving_models.next_token, trained.module, corpus, ratio)
    listed = _index(grpc).get(model.name)
    _load(grpc, model.name, deployment)
    return {"name": model.name, "before": model.name in before, "listed": listed,
            "trained": trained.outcome.summary(), "alive": server.alive()}


def _index(grpc: Client) -> dict[str, str]:
    """{model: state} from the repository index (gRPC: MLServer's HTTP index wants a body tritonclient omits)."""
    return {m["name"]: str(m.get("state", "")) for m in grpc.raw.get_model_repository_index(as_json=True)
            .get("models", [])}


def _check_ready(ctx: RunContext, deployment: _Deployment, clients: dict[str, Client], broken: str | None,
                 server: _serving_server.Server) -> None:
    names = [m.name for m in deployment.models] + ([broken] if broken else [])
    states = []
    ready_tasks = set()
    all_ready = True
    for name in names:
        if name in deployment.load_errors:
            states.append(f"{name}: failed to load ({deployment.load_errors[name]})")
            all_ready = False
            continue
        ready = {p: _ready(c, name) for p, c in clients.items()}
        model = next(m for m in deployment.models if m.name == name)
        if all(ready.values()):
            ready_tasks.add(model.task)
            states.append(f"{name} ({model.task}, {model.device}): ready over HTTP and gRPC")
        else:
            all_ready = False
            states.append(f"{name}: not ready ({ready})")
    ok = all_ready and len(ready_tasks) >= MIN_TASKS
    states.sort(key=lambda state: "ready over" in state)  # failures first: the detail is bounded
    ctx.out.check("serving.models_ready", ok,
                  f"{len(ready_tasks)} tasks ready of {MIN_TASKS} needed, on {server.describe()}: " + "; ".join(states),
                  observed=len(ready_tasks), expected=MIN_TASKS)


def _where_problem(ctx: RunContext, model: Model, answer: Answer) -> str | None:
    """Why an answer was not computed where the model was placed (None: it was)."""
    device = answer.where.get("device")
    if device != model.device:
        return f"answered on {device!r}, placed on {model.device!r}"
    if ctx.accel.is_accelerator and answer.where.get("provider") == _onnx.CPU_PROVIDER:
        return f"ONNX Runtime ran it on {answer.where['provider']}, not the card"
    return None


def _serve_all(client: Client, model: Model) -> tuple[np.ndarray, list[Answer]]:
    answers = []
    for i in range(0, model.samples, BATCH):
        answers.append(client.infer(model.name, [(t.name, t.value[i:i + BATCH]) for t in model.inputs],
                                    model.output))
    return np.concatenate([a.value for a in answers]), answers


def _check_inference(ctx: RunContext, deployment: _Deployment, clients: dict[str, Client]) -> None:
    ok: bool | None = True
    parts = []
    for model in deployment.ready():
        sign = "≥" if model.higher_is_better else "≤"
        for protocol, client in clients.items():
            where = f"{model.name} over {protocol}"
            try:
                served, answers = _serve_all(client, model)
            except Exception as exc:  # noqa: BLE001 - a refused request is a wrong answer here
                ok = False
                parts.append(f"{where}: request failed: {exc}"[:300])
                continue
            misplaced = next((p for p in (_where_problem(ctx, model, a) for a in answers) if p), None)
            labels = {"model": model.name, "task": model.task, "protocol": protocol,
                      "target": f"{sign} {model.target:.4f}", "target_source": model.target_source[:200],
                      "served_on": ", ".join(f"{k} {v}" for k, v in sorted(answers[0].where.items()))[:200]}
            if served.shape != model.reference.shape:
                ok = False
                why = f"{where}: answers of shape {served.shape}, expected {model.reference.shape}"
                ctx.out.metric("serving.model_score", None, model.metric, device=deployment.placed[model.name],
                               labels=labels, unavailable=why)
                parts.append(why)
                continue
            close = bool(np.allclose(served, model.reference, rtol=_serving_models.RTOL, atol=_serving_models.ATOL))
            score = model.score(served)
            gap = float(np.max(np.abs(served - model.reference)))
            ctx.out.metric("serving.model_score", score, model.metric, device=deployment.placed[model.name],
                           labels=labels)
            parts.append(f"{where}: {model.samples} samples, {model.metric} {score:.4f} (target {sign} "
                         f"{model.target:.4f}), max |served - reference| {gap:.1e}{'' if close else ' TOO FAR'}"
                         + (f", {misplaced}" if misplaced else ""))
            if not (close and model.meets(score)):
                ok = False
            elif misplaced and ok:
                ok = None
    if not deployment.ready():
        ok, parts = False, ["no model loaded"]
    ctx.out.check("serving.infer_correct", ok,
                  f"each held-out set against the CPU fp32 reference (rtol {_serving_models.RTOL:g}, atol "
                  f"{_serving_models.ATOL:g}; targets and where each ran: serving.model_score): " + "; ".join(parts))


def _right(ctx: RunContext, model: Model, sample: int) -> Any:
    """A check of one answer against the reference of held-out ``sample``."""
    want = model.reference[sample:sample + 1]

    def check(answer: Answer) -> str | None:
        if answer.value.shape != want.shape:
            return f"shape {answer.value.shape}, expected {want.shape}"
        if not np.allclose(answer.value, want, rtol=_serving_models.RTOL, atol=_serving_models.ATOL):
            return f"sample {sample}: max |served - reference| {float(np.max(np.abs(answer.value - want))):.3g}"
        return _where_problem(ctx, model, answer)
    return check


def _check_load_unload(ctx: RunContext, deployment: _Deployment, grpc: Client, http: Client,
                       added: dict[str, Any]) -> None:
    steps = []
    ok = True
    lm_name = added["name"]
    if added["before"] or added["listed"] is None or lm_name in deployment.load_errors:
        ok = False
    steps.append(f"{lm_name} added while the server ran: listed by the index before loading "
                 f"{'as ' + str(added['listed']) if added['listed'] is not None else 'NO'}, then "
                 + (f"failed to load ({deployment.load_errors[lm_name]})" if lm_name in deployment.load_errors
                    else "loaded"))
    model = next((m for m in deployment.ready() if m.name == "recommender"), None)
    if model is None:
        ok = False
        steps.append("recommender: not loaded, so it could not be unloaded")
    else:
        try:
            grpc.raw.unload_model(model.name)
            gone = not _ready(grpc, model.name) and not _ready(http, model.name)
            refused = _refused(http, model)
            grpc.raw.load_model(model.name)
            back = _ready(grpc, model.name) and _ready(http, model.name)
            why = _right(ctx, model, 0)(http.infer(model.name, [(t.name, t.value[:1]) for t in model.inputs],
                                                   model.output)) if back else "not ready"
        except Exception as exc:  # noqa: BLE001 - the repository API failed: the check fails with it
            ok = False
            steps.append(f"recommender unload/load failed: {exc}"[:300])
        else:
            ok = ok and gone and refused is not None and back and why is None
            steps.append(f"recommender unloaded ({'not ready' if gone else 'STILL READY'} on both protocols; a "
                         f"request {'refused: ' + refused if refused else 'was ANSWERED'}), loaded again "
                         f"({'ready' if back else 'NOT READY'}; answer {'right' if why is None else why})")
    ctx.out.check("serving.load_unload", ok, "; ".join(steps)[:1024])


def _ready(client: Client, name: str) -> bool:
    """Whether the server says ``name`` is ready (MLServer's gRPC answers an error for an unloaded model)."""
    try:
        return bool(client.raw.is_model_ready(name))
    except Exception:  # noqa: BLE001 - "not found" is "not ready"
        return False


def _refused(client: Client, model: Model) -> str | None:
    try:
        client.infer(model.name, [(t.name, t.value[:1]) for t in model.inputs], model.output)
    except Exception as exc:  # noqa: BLE001 - the refusal is what is wanted
        return str(exc).splitlines()[0][:120]
    return None


def _mix(ctx: RunContext, deployment: _Deployment) -> list[_serving_load.Request]:
    """Batch-1 requests cycling through the ready models' first held-out samples."""
    out: list[_serving_load.Request] = []
    models = deployment.ready()
    for sample in range(MIX_SAMPLES):
        for model in models:
            j = sample % model.samples
            out.append((model.name, [(t.name, t.value[j:j + 1]) for t in model.inputs], model.output,
                        _right(ctx, model, j)))
    return out


def _check_concurrency(ctx: RunContext, cfg: dict[str, Any], deployment: _Deployment,
                       server: _serving_server.Server) -> None:
    requests = _mix(ctx, deployment)
    if not requests:
        ctx.out.check("serving.concurrent_correct", False, "no model loaded")
        return
    concurrency, duration = int(cfg["concurrency"]), float(cfg["duration_s"])
    loads = [_serving_load.closed_loop(p, server.grpc_url if p == "grpc" else server.http_url, requests,
                                       concurrency, duration) for p in _serving_load.PROTOCOLS]
    for load in loads:
        labels = {"protocol": load.protocol, "concurrency": str(concurrency)}
        ctx.out.metric("serving.request_rate", load.rate, "requests/s", labels=labels)
        for q in (50, 90, 99):
            ctx.out.metric("serving.latency_ms", load.percentile_ms(q), "ms", labels={**labels, "percentile": f"p{q}"})
    ok = all(load.correct for load in loads)
    problems = [p for load in loads for p in load.problems][:3]
    models = ", ".join(m.name for m in deployment.ready())
    ctx.out.check("serving.concurrent_correct", ok,
                  f"batch-1 requests cycling through {models}: " + "; ".join(load.summary() for load in loads)
                  + (f"; first problems: {problems}" if problems else ""),
                  observed=sum(load.wrong + load.failed for load in loads), expected=0)


def _measure_qps(ctx: RunContext, cfg: dict[str, Any], deployment: _Deployment,
                 server: _serving_server.Server) -> None:
    bound = float(ctx.params.get("latency_bound_ms") or DEFAULT_LATENCY_BOUND_MS)
    model = next((m for m in deployment.ready() if m.name == "digits-classifier"), None)
    if model is None:
        ctx.out.metric("serving.max_qps", None, "requests/s", labels={"bound_ms": f"{bound:g}"},
                       unavailable="the digits classifier did not load")
        return
    requests: list[_serving_load.Request] = [
        (model.name, [(t.name, t.value[j:j + 1]) for t in model.inputs], model.output, _right(ctx, model, j))
        for j in range(model.samples)]
    within = []
    for clients in cfg["qps_levels"]:
        load = _serving_load.closed_loop("grpc", server.grpc_url, requests, int(clients), float(cfg["duration_s"]))
        ctx.out.metric("serving.qps", load.rate, "requests/s",
                       labels={"model": model.name, "protocol": "grpc", "concurrency": str(clients),
                               "mean_ms": f"{load.mean_ms:.2f}", "p99_ms": f"{load.percentile_ms(99):.2f}",
                               "correct": str(load.correct).lower()})
        if load.correct and load.mean_ms <= bound:
            within.append((load.rate, clients))
    labels = {"bound_ms": f"{bound:g}", "model": model.name, "protocol": "grpc", "statistic": "mean latency"}
    if within:
        rate, clients = max(within)
        ctx.out.metric("serving.max_qps", rate, "requests/s", labels={**labels, "concurrency": str(clients)})
    else:
        ctx.out.metric("serving.max_qps", None, "requests/s", labels=labels,
                       unavailable=f"no client count of {cfg['qps_levels']} kept the mean latency within {bound:g} ms "
                                   "with every answer right")
