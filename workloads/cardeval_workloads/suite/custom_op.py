"""``custom-op``: compile a custom operator with the card's compiler and check it (6.2.1.d, 6.3.1.c).

Test method 8.3.1.3 / 8.4.1.2: "through the software stack's compiler, per
the compile stages, inputs and outputs the card supports, run a custom
operator script, record the output, and verify it equals the expected
result." The operator is a fused linear layer with SiLU activation,
``y = silu(x·W + b)`` in fp32, written from scratch (no library kernel) and
built through the device's compiler path:

* **triton** (CUDA and ROCm cards): a Triton kernel (tiled product with fp32
  accumulation, bias and activation fused before the store), JIT-compiled to
  the card's binary (stages recorded from the compiled kernel: TTIR → TTGIR →
  LLIR → PTX/AMDGCN → cubin/hsaco). Compile time = the first call (compile
  and launch) with a fresh or cached Triton cache.
* **cpp** (the host CPU): a C++ operator registered with torch's dispatcher
  (``TORCH_LIBRARY``, the same registration path a vendor's out-of-tree
  backend uses), built by the host compiler at ``-O1`` with torch's own
  flags — through ``torch.utils.cpp_extension.load_inline`` (ninja) when
  ninja is installed, else through ``BuildExtension`` and setuptools in a
  child process (param ``cpp_builder``) — and called as
  ``torch.ops.cardeval_custom_<key>.fused_linear_silu``. Only the ATen
  headers it needs are included: a cold build takes about 15 s on an idle
  2-core CPU (``torch/extension.h`` with pybind11 takes about 50 s there,
  and ``-O2`` doubles it: the headers' inline code, not the loop, is what
  the optimiser spends its time on).
* **command** (any card, by configuration): the vendor's toolchain. Param
  ``build_command`` (or ``$CARDEVAL_CUSTOM_OP_BUILD``) builds the operator;
  it is timed. Param ``run_command`` (or ``$CARDEVAL_CUSTOM_OP_RUN``) runs it:
  it reads ``{x}`` (m×k), ``{w}`` (k×n) and ``{b}`` (n) and writes ``{y}``
  (m×n), all raw little-endian float32, row-major; the placeholders
  ``{workdir} {index} {x} {w} {b} {y} {m} {k} {n}`` are replaced ({index}:
  the card's index among the visible devices; paths quoted; a
  literal brace is written ``{{`` or ``}}``) and the command runs through the
  shell in ``{workdir}``. The environment variables let a vendor's derived
  workload image configure it without touching the evaluation spec.

``compiler=auto`` picks triton on CUDA/ROCm, cpp on the CPU, and command on
any other backend when a run command is configured.

Build caching: the C++ build directory (and, for triton, the kernel cache) is
kept under the user cache (see :mod:`cardeval_workloads.harness.cache`),
keyed by a hash of source, flags, compiler and torch version. The quick
profile reuses it (a warm load takes well under a second); standard and full build
afresh in a temporary directory so that the compiler itself is exercised; the
param ``fresh_build`` overrides either way. The check's detail and the
``build`` label of ``custom_op.compile_s`` say which happened.

Correctness: inputs x ~ N(0,1), W ~ N(0,1/k), b ~ N(0,1), drawn on the host
(seeded, recorded); the float64 reference is computed on the host from the
same values. Per element::

    |ŷ − y| ≤ L·E + u·(8 + 2|z|)·(|y| + L·E) + η,   E = γ_{k+1}·(|x|·|W| + |b|)

where z = x·W + b, γ_n = n·u/(1 − n·u) with u = 2^-24 is the worst-case bound
of a sum of k+1 fp32 terms in any order (Higham, Thm 3.5 / §3.1), L = 1.1 ≥
max|silu′| carries that error through the activation, the second term is
the activation's own evaluation error (exponential with argument scaling,
as GPU fast-math and ex2.approx do), and η = 2^-150.

Outputs: checks ``custom_op.compiled`` (observed: the compile time in s) and
``custom_op.correct`` (observed: max err/bound); metrics
``custom_op.compile_s`` (label ``build``: cold or warm) and
``custom_op.call_ms`` (the operator's execution time, with stats).

Test hooks: ``--param inject=compile-error`` breaks the source (a missing
header for cpp, a non-power-of-two tile for triton) so the compiler itself
fails; ``--param inject=corrupt-output`` adds a data-sized error to one output
element before the comparison.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cardeval_workloads.harness import cache
from cardeval_workloads.harness.context import RunContext
from cardeval_workloads.harness.errors import UsageError, describe_exception
from cardeval_workloads.harness.params import Param
from cardeval_workloads.harness.testhook import corrupt_one, hook_note
from cardeval_workloads.harness.timing import OverBudgetError, measure, timer_for

from . import _numerics

NAME = "custom-op"
TOPOLOGY = "card"

CHECKS = ("custom_op.compiled", "custom_op.correct")
METRICS = ()
SHOWN = ("custom_op.call_ms", "custom_op.compile_s", "custom_op.max_abs_err")

COMPILERS = ("auto", "triton", "cpp", "command")
INJECT = ("compile-error", "corrupt-output")

PARAMS = {
    "compiler": Param(str, "auto", "triton | cpp | command (auto: by backend)", choices=COMPILERS),
    "fresh_build": Param(bool, None, "build in a fresh directory (default: quick reuses the cache, "
                         "standard/full build afresh)"),
    "cpp_builder": Param(str, "auto", "cpp path: ninja (load_inline) | setuptools (BuildExtension without "
                         "ninja); auto: ninja when installed", choices=("auto", "ninja", "setuptools")),
    "build_command": Param(str, None, "compiler=command: the vendor build command "
                           "(default $CARDEVAL_CUSTOM_OP_BUILD)"),
    "run_command": Param(str, None, "compiler=command: the command that runs the built operator on "
                         "{x} {w} {b} → {y} (default $CARDEVAL_CUSTOM_OP_RUN)"),
    "command_timeout_s": Param(float, 600.0, "time limit of a build (and of run_command)"),
    "seed": Param(int, None, "seed of the inputs (default: fresh, recorded)"),
    "inject": Param(str, None, "TEST HOOK: compile-error | corrupt-output", choices=INJECT),
}

PROFILES = {
    "quick": {"cpu": dict(m=96, k=72, n=40, fresh=False, repeats=5, budget_s=1.0),
              "accelerator": dict(m=1000, k=520, n=264, fresh=False, repeats=10, budget_s=2.0)},
    "standard": {"cpu": dict(m=192, k=136, n=72, fresh=True, repeats=10, budget_s=2.0),
                 "accelerator": dict(m=4000, k=1032, n=520, fresh=True, repeats=20, budget_s=5.0)},
    "full": {"cpu": dict(m=384, k=264, n=136, fresh=True, repeats=20, budget_s=5.0),
             "accelerator": dict(m=8000, k=2056, n=1032, fresh=True, repeats=50, budget_s=10.0)},
}

#: max |silu'(z)| = 1.0998…
LIPSCHITZ = 1.1

#: The operator's namespace is ``cardeval_custom_<source key>`` (a fresh build adds a random
#: suffix): torch allows one library per namespace in a process, and a fresh build is a new library.
CPP_NAMESPACE = "cardeval_custom"
CPP_SOURCE = r"""
// A custom fused operator for the host CPU: y = silu(x·W + b), fp32, registered with torch's dispatcher.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <cmath>

namespace {

at::Tensor fused_linear_silu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && b.dim() == 1, "expected x (m,k), w (k,n), b (n)");
  TORCH_CHECK(x.size(1) == w.size(0) && w.size(1) == b.size(0), "shape mismatch");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
              "fp32 only");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous(), bc = b.contiguous();
  const int64_t m = xc.size(0), k = xc.size(1), n = wc.size(1);
  at::Tensor y = at::empty({m, n}, xc.options());
  const float* X = xc.data_ptr<float>();
  const float* W = wc.data_ptr<float>();
  const float* B = bc.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  for (int64_t i = 0; i < m; ++i) {
    float* row = Y + i * n;
    for (int64_t j = 0; j < n; ++j) row[j] = B[j];
    for (int64_t p = 0; p < k; ++p) {          // i-p-j order: W streamed row by row
      const float a = X[i * k + p];
      const float* wrow = W + p * n;
      for (int64_t j = 0; j < n; ++j) row[j] += a * wrow[j];
    }
    for (int64_t j = 0; j < n; ++j) row[j] = row[j] / (1.0f + std::exp(-row[j]));
  }
  return y;
}

}  // namespace

TORCH_LIBRARY(NAMESPACE, m) {
  m.def("fused_linear_silu(Tensor x, Tensor w, Tensor b) -> Tensor");
}

TORCH_LIBRARY_IMPL(NAMESPACE, CPU, m) {
  m.impl("fused_linear_silu", &fused_linear_silu);
}
"""
CPP_FLAGS = ("-O1",)  # -O2 doubles the build (the ATen headers' inline code) for a loop that needs no more
#: setuptools adds Python's own CFLAGS (-g -O3 …); -g0 drops the debug info, which only slows the build.
SETUPTOOLS_FLAGS = ("-g0",)
BROKEN_INCLUDE = "#include <cardeval_no_such_header_for_the_compile_error_test_hook.h>\n"


#: A built operator: (x, w, b) -> silu(x·w + b), on the device.
Operator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Build:
    """What building produced: a callable operator, or why not."""

    ok: bool
    compile_s: float | None = None
    cold: bool = True
    detail: str = ""
    call: Operator | None = None
    notes: dict[str, str] = field(default_factory=dict)
    #: A fresh build's directory, removed once the operator has been checked (a loaded library
    #: stays mapped after its file is gone).
    scratch: Path | None = None


# --- compilers --------------------------------------------------------------------------


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0][:120]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def cpp_builder(choice: str) -> str:
    """``ninja`` (torch's JIT ``load_inline``) when ninja is installed, else ``setuptools``."""
    if choice != "auto":
        return choice
    from torch.utils import cpp_extension

    return "ninja" if cpp_extension.is_ninja_available() else "setuptools"


_SETUPTOOLS_SCRIPT = """
import sys
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension
name, source, out, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
setup(name=name, ext_modules=[CppExtension(name, [source], extra_compile_args=flags)],
      cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
      script_args=["-q", "build_ext", "--build-lib", out, "--build-temp", out + "/obj"])
"""


def _compiler_errors(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "error:" in ln.lower()]
    return " | ".join(lines[:3]) if lines else (text.strip().splitlines() or [""])[-1]


def _build_ninja(namespace: str, source: str, build_dir: Path) -> tuple[Path | None, str | None]:
    from torch.utils import cpp_extension

    try:
        cpp_extension.load_inline(namespace, cpp_sources=[source], is_python_module=False,
                                  no_implicit_headers=True, build_directory=str(build_dir),
                                  extra_cflags=list(CPP_FLAGS), verbose=False)
    except Exception as exc:  # noqa: BLE001 - a compiler failure is the finding
        return None, _compiler_errors(str(exc)) or describe_exception(exc)
    return build_dir / f"{namespace}.so", None


def _build_setuptools(namespace: str, source: str, build_dir: Path,
                      timeout_s: float) -> tuple[Path | None, str | None]:
    """torch's ``BuildExtension`` without ninja (its flags, the host compiler), then ``load_library``."""
    src = build_dir / "main.cpp"
    existing = sorted(build_dir.glob(f"{namespace}*.so"))
    if not existing:  # the directory is keyed by the source: a library there was built from it
        src.write_text(source)
        try:
            proc = subprocess.run([sys.executable, "-c", _SETUPTOOLS_SCRIPT, namespace, str(src), str(build_dir),
                                   *CPP_FLAGS, *SETUPTOOLS_FLAGS], cwd=build_dir, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"the setuptools build did not finish in {timeout_s:g} s"
        if proc.returncode != 0:
            return None, _compiler_errors(proc.stderr + proc.stdout)
        existing = sorted(build_dir.glob(f"{namespace}*.so"))
        if not existing:
            return None, f"the setuptools build wrote no {namespace}*.so in {build_dir}"
    try:
        torch.ops.load_library(str(existing[0]))
    except Exception as exc:  # noqa: BLE001 - a library that does not load is a failed build
        return None, f"loading {existing[0].name} failed: {describe_exception(exc)}"
    return existing[0], None


def build_cpp(fresh: bool, broken: bool, builder: str, timeout_s: float, log) -> Build:
    template = (BROKEN_INCLUDE if broken else "") + CPP_SOURCE
    cxx = os.environ.get("CXX", "c++")
    compiler = _tool_version([cxx, "--version"])
    flags = CPP_FLAGS + (SETUPTOOLS_FLAGS if builder == "setuptools" else ())
    key = cache.key_of(template, " ".join(flags), compiler, torch.__version__, builder)
    namespace = f"{CPP_NAMESPACE}_{key[:8]}"
    if fresh or broken:
        build_dir = Path(tempfile.mkdtemp(prefix="cardeval-custom-op-"))
        namespace += "_" + os.urandom(3).hex()
    else:
        build_dir = cache.cache_dir("custom-op-cpp", key)
    source = template.replace("TORCH_LIBRARY(NAMESPACE,", f"TORCH_LIBRARY({namespace},").replace(
        "TORCH_LIBRARY_IMPL(NAMESPACE,", f"TORCH_LIBRARY_IMPL({namespace},")
    cold = not any(build_dir.glob(f"{namespace}*.so"))
    record = build_dir / "cardeval-build.json"
    started = time.perf_counter()
    if builder == "ninja":
        library, error = _build_ninja(namespace, source, build_dir)
    else:
        library, error = _build_setuptools(namespace, source, build_dir, timeout_s)
    elapsed = time.perf_counter() - started
    scratch = build_dir if fresh or broken else None
    if error is not None or library is None:
        return Build(False, elapsed, True, f"the C++ build ({builder}) with {compiler} failed after {elapsed:.1f} s: "
                     f"{(error or 'no library')[:700]}", scratch=scratch)
    op = getattr(torch.ops, namespace).fused_linear_silu
    size = library.stat().st_size if library.exists() else 0
    previous = None
    if cold:
        try:
            record.write_text(json.dumps({"cold_compile_s": elapsed, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime())}))
        except OSError:
            pass
    else:
        try:
            previous = json.loads(record.read_text())
        except (OSError, ValueError):
            previous = None
    via = "ninja (torch.utils.cpp_extension.load_inline)" if builder == "ninja" else \
        "setuptools (torch.utils.cpp_extension.BuildExtension, no ninja)"
    stages = (f"stages: C++ source ({len(source.splitlines())} lines) → {compiler} {' '.join(flags)} via {via} "
              f"→ shared library {library.name} ({size} bytes) → dispatcher op "
              f"torch.ops.{namespace}.fused_linear_silu (CPU kernel)")
    if cold:
        how = f"built from source in {elapsed:.1f} s in {'a fresh directory' if fresh else build_dir}"
    else:
        when = f" (built {previous['at']} in {previous['cold_compile_s']:.1f} s)" if previous else ""
        how = (f"reused the cached build for this source, flags, compiler and torch{when} from {build_dir}; "
               f"checked and loaded in {elapsed:.2f} s (fresh_build=true compiles anew)")
    log.info("custom-op cpp: %s", how)
    return Build(True, elapsed, cold, f"{how}; {stages}", call=op, scratch=scratch)


def build_triton(device: torch.device, sync, fresh: bool, broken: bool, log) -> Build:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return Build(False, None, True, f"Triton is not importable here: {describe_exception(exc)}")
    key = cache.key_of(Path(__file__).with_name("_triton_ops.py").read_text(), torch.__version__)
    scratch = Path(tempfile.mkdtemp(prefix="cardeval-triton-")) if fresh or broken else None
    cache_path = scratch or cache.cache_dir("custom-op-triton", key)
    os.environ["TRITON_CACHE_DIR"] = str(cache_path)
    cold = not any(cache_path.rglob("*.json"))
    from . import _triton_ops

    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(64, 64, generator=gen).to(device)
    w = torch.randn(64, 64, generator=gen).to(device)
    b = torch.randn(64, generator=gen).to(device)
    started = time.perf_counter()
    try:
        _, handle = _triton_ops.fused_linear_silu(x, w, b, block_k=24 if broken else 32)
        sync()
    except Exception as exc:  # noqa: BLE001 - a compiler failure is the finding
        elapsed = time.perf_counter() - started
        return Build(False, elapsed, True, f"the Triton compile failed after {elapsed:.1f} s: "
                     f"{describe_exception(exc)}", scratch=scratch)
    elapsed = time.perf_counter() - started
    asm = getattr(handle, "asm", None) or {}
    stages = " → ".join(k.upper() for k in asm) if asm else "unknown (this Triton does not expose .asm)"
    meta = getattr(handle, "metadata", None)
    regs = getattr(handle, "n_regs", None)
    version = getattr(sys_modules_triton(), "__version__", "?")
    how = (f"Triton {version} {'compiled' if cold else 'loaded from its cache'} the kernel in {elapsed:.2f} s "
           f"(first call: compile + launch; cache {cache_path})")
    extra = f", {regs} registers/thread" if regs is not None else ""
    log.info("custom-op triton: %s", how)
    notes = {"triton_target": str(getattr(meta, "target", ""))[:100]} if meta is not None else {}
    return Build(True, elapsed, cold, f"{how}; stages: Python (triton.jit) → {stages}{extra}",
                 call=lambda x, w, b: _triton_ops.fused_linear_silu(x, w, b)[0], notes=notes, scratch=scratch)


def sys_modules_triton():
    return sys.modules.get("triton")


class CommandOp:
    """The vendor path: a configured build command and a run command over raw float32 files."""

    def __init__(self, build: str, run: str, timeout_s: float) -> None:
        self.build_cmd, self.run_cmd, self.timeout_s = build, run, timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="cardeval-custom-op-cmd-"))
        self.index = 0

    def _shell(self, template: str, values: dict[str, str]) -> subprocess.CompletedProcess:
        quoted = {k: shlex.quote(v) for k, v in values.items()}
        command = template.format(**quoted)
        return subprocess.run(command, shell=True, cwd=self.workdir, capture_output=True, text=True,
                              timeout=self.timeout_s)

    def build(self, index: int) -> Build:
        self.index = index
        started = time.perf_counter()
        try:
            proc = self._shell(self.build_cmd, {"workdir": str(self.workdir), "index": str(index)})
        except subprocess.TimeoutExpired:
            return Build(False, self.timeout_s, True, f"build_command did not finish in {self.timeout_s:g} s")
        except (KeyError, IndexError, ValueError) as exc:
            return Build(False, None, True, f"build_command has an unknown placeholder: {exc}")
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-600:]
            return Build(False, elapsed, True, f"build_command exited with {proc.returncode} after {elapsed:.1f} s: "
                         f"{tail}")
        return Build(True, elapsed, True, f"build_command succeeded in {elapsed:.1f} s in {self.workdir}; "
                     f"stages: the vendor toolchain's (see its output); command: {self.build_cmd[:200]}",
                     call=self.call)

    def call(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m, k = x.shape
        n = w.shape[1]
        paths = {name: self.workdir / f"{name}.f32" for name in ("x", "w", "b", "y")}
        for name, t in (("x", x), ("w", w), ("b", b)):
            t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tofile(paths[name])
        paths["y"].unlink(missing_ok=True)
        values = {k_: str(v) for k_, v in paths.items()}
        values.update(workdir=str(self.workdir), m=str(m), k=str(k), n=str(n), index=str(self.index))
        proc = self._shell(self.run_cmd, values)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-500:]
            raise RuntimeError(f"run_command exited with {proc.returncode}: {tail}")
        if not paths["y"].exists():
            raise RuntimeError("run_command wrote no output file {y}")
        import numpy as np

        data = np.fromfile(paths["y"], dtype="<f4")
        if data.size != m * n:
            raise RuntimeError(f"run_command wrote {data.size} float32 values, expected {m}×{n} = {m * n}")
        return torch.from_numpy(data.reshape(m, n).copy())


# --- the check ----------------------------------------------------------------------------


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 y and the per-element bound (see the module docstring)."""
    x64, w64, b64 = (t.to("cpu", torch.float64) for t in (x, w, b))
    z = x64 @ w64 + b64
    y = z / (1 + torch.exp(-z))
    u = _numerics.UNIT_ROUNDOFF["fp32"]
    e = _numerics.gamma(x64.shape[1] + 1, u) * (x64.abs() @ w64.abs() + b64.abs())
    bound = LIPSCHITZ * e + u * (8 + 2 * z.abs()) * (y.abs() + LIPSCHITZ * e) + _numerics.underflow_unit("fp32")
    return y, bound


def _choose(ctx: RunContext) -> tuple[str, str | None]:
    """The compiler to use, or (name, reason it cannot be used)."""
    choice = ctx.params["compiler"]
    backend = ctx.accel.backend
    if choice == "auto":
        if ctx.params.get("run_command") or os.environ.get("CARDEVAL_CUSTOM_OP_RUN"):
            choice = "command"
        elif backend in ("cuda", "rocm"):
            choice = "triton"
        elif backend == "cpu":
            choice = "cpp"
        else:
            return "command", (f"no built-in compiler path for backend {backend}: configure the vendor's "
                               "toolchain with build_command and run_command (or $CARDEVAL_CUSTOM_OP_BUILD and "
                               "$CARDEVAL_CUSTOM_OP_RUN), or compiler=triton if it has a Triton backend")
    if choice == "cpp" and backend != "cpu":
        return choice, f"the cpp path builds a host CPU operator; this run is on {backend}"
    if choice == "triton" and backend == "cpu":
        return choice, "Triton compiles for accelerators; the host CPU uses the cpp path"
    return choice, None


@dataclass(frozen=True)
class _Plan:
    """What ``run`` decides once for every card: the compiler, the seed, the hook."""

    compiler: str
    unusable: str | None  # why the compiler cannot be used here
    seed: int
    fresh: bool
    inject: str | None
    command: CommandOp | None  # the vendor's commands (compiler "command")


def run(ctx: RunContext) -> None:
    out = ctx.out
    seed = ctx.params.get("seed")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    out.params["seed"] = seed
    compiler, unusable = _choose(ctx)
    out.params["compiler_used"] = compiler
    fresh = ctx.params.get("fresh_build")
    inject = ctx.params.get("inject")
    command = None
    if compiler == "command" and unusable is None:
        build_cmd = ctx.params.get("build_command") or os.environ.get("CARDEVAL_CUSTOM_OP_BUILD")
        run_cmd = ctx.params.get("run_command") or os.environ.get("CARDEVAL_CUSTOM_OP_RUN")
        if not build_cmd or not run_cmd:
            raise UsageError("compiler=command needs both build_command and run_command "
                             "(or $CARDEVAL_CUSTOM_OP_BUILD and $CARDEVAL_CUSTOM_OP_RUN)")
        if inject == "compile-error":
            raise UsageError("inject=compile-error applies to the triton and cpp paths; give the command "
                             "path a failing build_command instead")
        command = CommandOp(build_cmd, run_cmd, float(ctx.params["command_timeout_s"]))
    plan = _Plan(compiler, unusable, seed, bool(ctx.sizes["fresh"]) if fresh is None else fresh, inject, command)
    try:
        ctx.per_device(lambda index: _one_card(ctx, plan, index))
    finally:
        if command is not None:
            shutil.rmtree(command.workdir, ignore_errors=True)


def _one_card(ctx: RunContext, plan: _Plan, index: int) -> None:
    out, where = ctx.out, ctx.accel.describe(index)
    out.device(ctx.identity(index))
    if plan.unusable:
        out.check("custom_op.compiled", None, f"{plan.compiler} on {where}: {plan.unusable}", device=index)
        out.check("custom_op.correct", None, "not run: no operator was built", device=index)
        out.metric("custom_op.compile_s", None, "s", device=index, unavailable=plan.unusable)
        return
    device = ctx.accel.device(index)
    if plan.compiler == "cpp":
        build = build_cpp(plan.fresh, plan.inject == "compile-error", cpp_builder(ctx.params["cpp_builder"]),
                          float(ctx.params["command_timeout_s"]), ctx.log)
    elif plan.compiler == "triton":
        build = build_triton(device, lambda: ctx.accel.synchronize(index), plan.fresh,
                             plan.inject == "compile-error", ctx.log)
    else:
        assert plan.command is not None, "a usable command compiler has its commands"
        build = plan.command.build(index)
    try:
        _check_build(ctx, plan, build, index, device)
    finally:
        if build.scratch is not None:
            shutil.rmtree(build.scratch, ignore_errors=True)


def _check_build(ctx: RunContext, plan: _Plan, build: Build, index: int, device: torch.device) -> None:
    """``custom_op.compiled``, then the built operator against the float64 reference, then its time."""
    out, where = ctx.out, ctx.accel.describe(index)
    observed = round(build.compile_s, 3) if build.compile_s is not None else None
    out.check("custom_op.compiled", build.ok, f"{plan.compiler} on {where}: {build.detail}",
              observed=observed, expected="compiles and loads", device=index)
    label = {"build": "cold" if build.cold else "warm", "compiler": plan.compiler}
    if build.compile_s is not None:
        out.metric("custom_op.compile_s", build.compile_s, "s", device=index, labels=label)
    else:
        out.metric("custom_op.compile_s", None, "s", device=index, labels=label,
                   unavailable="the build did not run to completion")
    if not build.ok:
        out.check("custom_op.correct", None, "not run: the operator did not compile", device=index)
        return
    call = build.call
    assert call is not None, "a build that succeeded has its operator"
    m, k, n = int(ctx.sizes["m"]), int(ctx.sizes["k"]), int(ctx.sizes["n"])
    gen = torch.Generator(device="cpu").manual_seed(plan.seed + index)
    x = torch.randn(m, k, generator=gen)
    w = torch.randn(k, n, generator=gen) / math.sqrt(k)
    b = torch.randn(n, generator=gen)
    dx, dw, db = x.to(device), w.to(device), b.to(device)
    try:
        got = call(dx, dw, db)
        ctx.accel.synchronize(index)
        got = got.to("cpu")
    except Exception as exc:  # noqa: BLE001 - a built operator that cannot run is a failure
        out.check("custom_op.correct", False, f"the built operator raised {describe_exception(exc)}",
                  device=index)
        return
    if plan.inject == "corrupt-output":
        got = corrupt_one(got.detach().clone())
    ref, bound = reference(x, w, b)
    cmp = _numerics.compare(got, ref, bound)
    hook = hook_note("corrupt-output") if plan.inject == "corrupt-output" else ""
    ratio = cmp.ratio if cmp.ratio is not None and math.isfinite(cmp.ratio) else None
    out.check("custom_op.correct", cmp.ok,
              f"silu(x·W+b), x {m}x{k}, W {k}x{n}, fp32 on {where}, seed {plan.seed + index}, vs float64 host "
              f"reference: {cmp.summary()}; bound L·E + u(8+2|z|)(|y|+L·E) + η with E = γ_(k+1)(|x||W|+|b|), "
              f"u = 2^-24, L = {LIPSCHITZ}{hook}",
              observed=round(ratio, 6) if ratio is not None else "inf", expected="<= 1", device=index)
    out.metric("custom_op.max_abs_err", cmp.max_abs_err if math.isfinite(cmp.max_abs_err) else None, "abs",
               device=index, labels={"detail": "true"},
               unavailable=None if math.isfinite(cmp.max_abs_err) else "non-finite output")
    if plan.compiler == "command":
        return  # the vendor program's run time includes file I/O and process start: not an op time
    try:
        timing = measure(lambda: call(dx, dw, db), timer_for(ctx.accel, index), warmup=2,
                         repeats=int(ctx.sizes["repeats"]), min_sample_s=0.01, budget_s=float(ctx.sizes["budget_s"]))
        stats = timing.stats_of(lambda s: s * 1e3)
        out.metric("custom_op.call_ms", stats.median, "ms", device=index, stats=stats,
                   labels={"shape": f"{m}x{k}x{n}", "timer": timing.method})
    except OverBudgetError as exc:
        out.metric("custom_op.call_ms", None, "ms", device=index, unavailable=f"skipped: {exc}")
