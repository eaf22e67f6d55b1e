"""The Triton kernel of ``custom-op`` (imported only where Triton is used).

The fused operator is ``y = silu(x @ w + b)`` in fp32: a tiled product with
fp32 accumulation (``input_precision="ieee"``: no TF32), the bias and the
activation applied in registers before the one store — the classic shape of
a custom fused kernel. Written against Triton 3's language; it also runs
under ``TRITON_INTERPRET=1`` (the interpreter executes it on the host), which
is how the tests check the kernel's logic on a machine without a GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def fused_linear_silu_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K,  # noqa: N803 - Triton's matmul names
                             stride_xm, stride_xk, stride_wk, stride_wn, stride_ym, stride_yn,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # noqa: N803
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + kk[:, None] * stride_wk + rn[None, :] * stride_wn,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc += tl.dot(a, w, input_precision="ieee")
    bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0)
    z = acc + bias[None, :]
    y = z * tl.sigmoid(z)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, y,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def fused_linear_silu(x, w, b, block_k: int = 32):
    """Launch the kernel; returns ``(y, launch result)`` (the compiled kernel on Triton 3).

    ``block_k`` other than a power of two is a compile error (``tl.arange`` needs one): the
    ``compile-error`` test hook uses that to exercise the failure path through the compiler.
    """
    import torch

    m, k = x.shape
    n = w.shape[1]
    y = torch.empty((m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, 32), triton.cdiv(n, 32))
    handle = fused_linear_silu_kernel[grid](x, w, b, y, m, n, k,
                                            x.stride(0), x.stride(1), w.stride(0), w.stride(1),
                                            y.stride(0), y.stride(1),
                                            BLOCK_M=32, BLOCK_N=32, BLOCK_K=block_k)
    return y, handle

