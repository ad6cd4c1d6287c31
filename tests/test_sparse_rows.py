"""The row-sparse kernels of the TopK SAE (zspace.nn.sparse_rows) and the C build behind them
(zspace.core.native): compiled and torch paths give the same answers, and a machine without a
compiler falls back with one warning."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from zspace.core import native
from zspace.nn import sparse_rows as sr


def rows(n, width, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=g)
    x[:40] = x[:40].round()                        # many ties
    x[40:45] = 0.0                                 # all equal
    return x.to(dtype)


def check_topk(x, k, vals, idx):
    assert vals.shape == idx.shape == (len(x), k) and vals.dtype == x.dtype
    assert torch.equal(x.gather(1, idx), vals)                      # indices point at the values
    assert torch.equal(vals.sort(1, descending=True).values, x.topk(k, dim=1).values)
    assert all(len(set(r.tolist())) == k for r in idx)               # k distinct columns


@pytest.mark.parametrize("width,k", [(512, 8), (2048, 32), (3072, 8), (96, 3), (100, 7), (1000, 125), (77, 9),
                                     (64, 64), (300, 128)])
@pytest.mark.parametrize("compiled", [True, False])
def test_row_topk_selects_what_torch_topk_does(monkeypatch, width, k, compiled):
    """Both paths return the k largest of every row (the multiset torch.topk returns, indices that
    point at them), with ties, widths that are no multiple of 16, and k up to the width."""
    if not compiled:
        monkeypatch.setenv("ZSPACE_NATIVE", "0")
    x = rows(300, width, width + k)
    check_topk(x, k, *sr.row_topk(x, k))


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_topk_reads_bf16_strided_rows_and_nan_on_any_thread_count(threads):
    assert sr.compiled_available()
    torch.set_num_threads(threads)
    x = rows(500, 600, 1)
    check_topk(x, 16, *sr.row_topk(x, 16))
    xb = x.bfloat16()
    check_topk(xb, 16, *sr.row_topk(xb, 16))
    wide = rows(500, 700, 2)
    view = wide[:, 50:650]                                           # rows 700 apart in memory
    check_topk(view.contiguous(), 16, *sr.row_topk(view, 16))
    x[7, 123] = float("nan")                                          # NaN ranks first, as in torch.topk
    vals, idx = sr.row_topk(x, 16)
    assert 123 in idx[7].tolist() and torch.isnan(vals[7]).sum() == 1
    assert torch.equal(vals[8:], x[8:].gather(1, idx[8:]))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width,d,k", [(512, 64, 8), (3072, 100, 32), (40, 7, 40)])
def test_compiled_gathers_and_scatters_equal_the_torch_products(monkeypatch, threads, width, d, k):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(width)
    G, X = torch.randn(300, d, generator=g), torch.randn(300, d, generator=g)
    W = torch.randn(width, d, generator=g)
    idx = torch.stack([torch.randperm(width, generator=g)[:k] for _ in range(300)])
    v = torch.randn(300, k, generator=g)
    f = torch.zeros(300, width).scatter(1, idx, v)
    ref_dot, ref_scatter = (G @ W.t()).gather(1, idx), f.t() @ X
    got = sr.gather_dot(G, W, idx), sr.scatter_outer(idx, v, X, width)
    monkeypatch.setenv("ZSPACE_NATIVE", "0")
    fallback = sr.gather_dot(G, W, idx), sr.scatter_outer(idx, v, X, width)
    for a, b, ref in zip(got, fallback, (ref_dot, ref_scatter)):
        assert torch.allclose(a, ref, atol=1e-4) and torch.allclose(b, ref, atol=1e-4)


def test_compiled_paths_stay_out_of_autograd():
    """A tensor that needs a gradient takes the torch path, so autograd sees every operation."""
    x = torch.randn(64, 256, requires_grad=True)
    vals, idx = sr.row_topk(x, 4)
    assert vals.requires_grad
    vals.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x).scatter(1, idx, 1.0))


def test_build_is_cached_and_a_missing_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSPACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    lib = native.load(sr.SOURCE, sr.SIGNATURES)
    built = list((tmp_path / "cache" / "native").glob("*.so"))
    assert lib is not None and len(built) == 1
    assert not list((tmp_path / "cache" / "native").glob(".*"))        # no temporary left behind
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})
    native.load(sr.SOURCE, sr.SIGNATURES)
    assert built[0].stat().st_mtime_ns == mtime                        # reused, not rebuilt

    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("ZSPACE_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="not available"):
        assert native.load(sr.SOURCE, sr.SIGNATURES) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                # once, not on every call
        assert not sr.compiled_available()
        x = rows(100, 256, 3)
        check_topk(x, 8, *sr.row_topk(x, 8))


def test_a_failing_compiler_falls_back(monkeypatch, tmp_path):
    script = tmp_path / "cc"
    script.write_text("#!/bin/sh\necho 'cc: error: broken' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("ZSPACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(script))
    monkeypatch.setattr(native, "_loaded", {})
    with pytest.warns(RuntimeWarning, match="failed"):
        assert native.load(sr.SOURCE, sr.SIGNATURES) is None
    assert not list((tmp_path / "cache" / "native").glob("*"))        # nothing half-written kept


def test_a_forked_child_runs_the_threaded_kernels():
    """The thread pool does not survive fork (its threads stay in the parent); a child builds its own."""
    import multiprocessing as mp

    torch.set_num_threads(2)
    x = rows(400, 512, 4)
    check_topk(x, 8, *sr.row_topk(x, 8))                     # the parent's pool exists now
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        vals = pool.apply_async(_child_topk, (x,)).get(timeout=60)
    assert torch.equal(vals, x.topk(8, dim=1).values)


def _child_topk(x):
    torch.set_num_threads(2)
    return sr.row_topk(x, 8)[0].sort(1, descending=True).values
