"""Row-sparse operations of a TopK sparse autoencoder: the k largest of each row, and the
gathers and scatters through k indices per row that its backward needs.

Each has a torch implementation (any device, any float dtype) and, on the CPU, a compiled
one (``csrc/sparse_rows.c``, built on first use with the system's C compiler and cached; see
:mod:`zspace.core.native`) that gives the same values up to float summation order. Where no
compiler is found the torch code runs, with one warning. On this project's 2-core CPU at one
thread, for 4096 rows (benchmarks/sae_kernels.py): the 32 largest of 3072 columns 34.8 ms through
the torch path, 6.0 ms compiled; ``gather_dot`` at d = 384, k = 32: 65 -> 3.9 ms; ``scatter_outer``
16.7 -> 3.7 ms.

Shapes: x (B, W); idx, vals (B, k) with idx int64; W (n, d) a dictionary with one row per
feature; G, X (B, d).
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..core import native

SOURCE = Path(__file__).with_name("csrc") / "sparse_rows.c"
_ENTRY_BYTES = 16                 # the C heap's (float, int64) entry, padded
_MAX_GROUP_VECTORS = 32           # the C selection's accumulators: up to 16 x 32 column groups, at least 2 columns each
_pool: ThreadPoolExecutor | None = None

_i64, _int, _p = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
SIGNATURES = {
    "topk_rows_f32": [_p, _i64, _i64, _i64, _i64, _int, _p, _p, _p, _p, _p],
    "topk_rows_bf16": [_p, _i64, _i64, _i64, _i64, _int, _p, _p, _p, _p, _p],
    "gather_dot": [_p, _i64, _i64, _i64, _p, _p, _int, _p],
    "scatter_outer": [_p, _i64, _p, _p, _p, _i64, _int, _i64, _i64],
}

# The torch fallbacks: dense products (scatter the k values into width columns, one matrix
# product) beat gathering and scattering rows while the width is within a few tens of k
# (measured on this CPU: 512 features, k = 32: 74 -> 8 ms); both run in row chunks whose
# intermediates stay near CHUNK_ELEMENTS (a 4096 x 2048 fp32 product took 27 ms whole and 12 ms
# in 256-row pieces: large temporaries are mmapped and page-faulted afresh each time).
CHUNK_ELEMENTS = 1 << 20
DENSE_GATHER = 64     # gather_dot through a dense product while width <= DENSE_GATHER * k
DENSE_SCATTER = 16    # scatter_outer through a dense product while width <= DENSE_SCATTER * k


def _lib():
    return native.load(SOURCE, SIGNATURES)


def compiled_available() -> bool:
    """Whether the compiled kernels run on the CPU (False: the torch code does)."""
    return native.enabled() and _lib() is not None


def _compiled(*tensors: torch.Tensor) -> bool:
    return (all(t.device.type == "cpu" for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and compiled_available())


def row_chunks(rows: int, per_row: int, min_rows: int = 16):
    """Row slices whose (rows x per_row) intermediates stay near CHUNK_ELEMENTS, of at least
    ``min_rows`` rows."""
    step = max(min_rows, CHUNK_ELEMENTS // max(per_row, 1))
    for s in range(0, rows, step):
        yield slice(s, min(rows, s + step))


def _split(n: int, minimum: int) -> list[tuple[int, int]]:
    """[start, stop) ranges over n items, one per torch thread that gets at least ``minimum``."""
    t = max(1, min(torch.get_num_threads(), n // minimum))
    cuts = [n * i // t for i in range(t + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(t)]


def _forget_pool() -> None:
    global _pool
    _pool = None             # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run(parts: list[tuple[int, int]], call) -> None:
    """call(start, stop) for every part, several at once on a thread pool (ctypes releases the GIL)."""
    global _pool
    if len(parts) == 1:
        call(*parts[0])
        return
    if _pool is None or _pool._max_workers < len(parts):
        _pool = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="zspace-rows")
    for f in [_pool.submit(call, a, b) for a, b in parts]:
        f.result()


# ------------------------------------------------------------------------------------ top-k
def row_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest in each row of x (B, W), in no particular order, values
    in x's dtype: the same set as ``torch.topk`` (ties aside). NaN counts as the largest."""
    rows, width = x.shape
    if not 0 < k <= width:
        raise ValueError(f"k = {k} must be in 1..{width}")
    if not (4 * k <= width and k <= 16 * min(_MAX_GROUP_VECTORS, width // 32) and x.dtype in (torch.float32, torch.bfloat16)
            and x.stride(1) == 1 and _compiled(x)):
        return _blocked_topk(x, k)
    lib = _lib()
    fn = lib.topk_rows_f32 if x.dtype == torch.float32 else lib.topk_rows_bf16
    vals = torch.empty(rows, k, dtype=torch.float32)
    idx = torch.empty(rows, k, dtype=torch.int64)
    ld = x.stride(0)

    def call(r0, r1):     # scratch per thread: the heap, and candidate values and columns (16 spare)
        heap = ctypes.create_string_buffer(_ENTRY_BYTES * k)
        cand_v, cand_i = ctypes.create_string_buffer(4 * (width + 16)), ctypes.create_string_buffer(4 * (width + 16))
        fn(x.data_ptr(), r0, r1, width, ld, k, vals.data_ptr(), idx.data_ptr(), heap, cand_v, cand_i)

    _run(_split(rows, 64), call)
    return vals.to(x.dtype), idx


def _blocked_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path: the columns are split into g strided blocks (column c in block c mod
    (width / g)) and the k blocks with the largest maxima are kept: every one of the row's k
    largest values lies in them (a value left out would have k kept maxima at least as large),
    so the k largest of those k g candidates are the answer; g ~ sqrt(width / k) balances the two
    selections (1.3-1.9x faster than one ``torch.topk`` at an SAE's widths on a CPU)."""
    rows, width = pre.shape
    g = 1
    while g < 16 and (2 * g) ** 2 * k <= width and width % (2 * g) == 0:
        g *= 2
    if g == 1:
        return pre.topk(k, dim=1, sorted=False)
    blocks = width // g
    _, best = pre.view(rows, g, blocks).amax(1).topk(k, dim=1, sorted=False)        # (B, k) blocks
    offsets = torch.arange(0, width, blocks, device=pre.device)
    cand = (best.unsqueeze(1) + offsets.view(1, g, 1)).view(rows, g * k)
    vals, j = pre.gather(1, cand).topk(k, dim=1, sorted=False)
    return vals, cand.gather(1, j)


# ---------------------------------------------------------------------- gathers and scatters
def _plain_f32(*ts: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.is_contiguous() for t in ts)


def gather_dot(G: torch.Tensor, W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, k): out[b, j] = <G[b], W[idx[b, j]]>, in G's dtype."""
    (rows, k), (width, d) = idx.shape, W.shape
    if _compiled(G, W, idx) and _plain_f32(G, W) and idx.is_contiguous():
        out = torch.empty(rows, k, dtype=torch.float32)
        _run(_split(rows, 64), lambda r0, r1: _lib().gather_dot(G.data_ptr(), r0, r1, d, W.data_ptr(),
                                                                 idx.data_ptr(), k, out.data_ptr()))
        return out
    out = torch.empty(rows, k, dtype=G.dtype, device=G.device)
    dense = width <= DENSE_GATHER * k
    W = W.to(G.dtype)
    for r in row_chunks(rows, width if dense else k * d):
        if dense:
            out[r] = (G[r] @ W.t()).gather(1, idx[r])
        else:
            out[r] = torch.bmm(W.index_select(0, idx[r].reshape(-1)).view(-1, k, d), G[r, :, None]).squeeze(2)
    return out


def scatter_outer(idx: torch.Tensor, v: torch.Tensor, X: torch.Tensor, width: int) -> torch.Tensor:
    """(width, d) = f^T X, with f (B, width) holding v at idx and zeros elsewhere: the gradient of
    a dictionary read or written through the k active features of each row."""
    (rows, k), d = idx.shape, X.shape[1]
    if _compiled(idx, v, X) and _plain_f32(v, X) and idx.is_contiguous():
        out = torch.zeros(width, d, dtype=torch.float32)
        # threads own column ranges, so no two write the same element
        _run(_split(d, 16), lambda c0, c1: _lib().scatter_outer(out.data_ptr(), d, idx.data_ptr(), v.data_ptr(),
                                                                 X.data_ptr(), rows, k, c0, c1))
        return out
    out = torch.zeros(width, d, dtype=X.dtype, device=X.device)
    v = v.to(X.dtype)
    dense = width <= DENSE_SCATTER * k
    for r in row_chunks(rows, width if dense else k * d):
        if dense:
            f = torch.zeros(r.stop - r.start, width, dtype=X.dtype, device=X.device)
            out.addmm_(f.scatter_(1, idx[r], v[r]).t(), X[r])
        else:
            out.index_add_(0, idx[r].reshape(-1), (v[r, :, None] * X[r, None, :]).reshape(-1, d))
    return out
