"""Compilation of the numba HBV kernels: what is compiled (the step once, shared by both dtypes;
the kernels only for the dtype used), where it is cached, the first-compile message, and the
chunked parallel execution (bitwise equal to one chunk).  No timings."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnhydro import _numba
from gnnhydro.runoff import HBV
from gnnhydro.runoff.kernels import hbv_numba

N, T, M = 5, 12, 2


def _fwd_bwd(dtype, make_forcing, make_params, **opts):
    model = HBV(nmul=M, backend="numba", **opts)
    f = make_forcing(N, T, dtype=dtype)
    p = make_params(model, N, T, dtype=dtype)
    out = model(f, p)
    grads = torch.autograd.grad(out["runoff"].sum() + out["baseflow"].sum(), list(p.values()))
    return out, grads


_COLD_SCRIPT = """
import inspect
import json
import torch
from gnnhydro.bench.runoff import synthetic_case
from gnnhydro.runoff import HBV
from gnnhydro.runoff.kernels import hbv_numba as k


def dtypes(disp, name):
    i = list(inspect.signature(disp.py_func).parameters).index(name)
    return sorted({str(sig[i].dtype) for sig in disp.signatures})


def floats(disp):
    return [sorted({str(a.dtype) for a in sig if str(getattr(a, "dtype", "")).startswith("float")})
            for sig in disp.signatures]


res = {}
for dtype in (torch.float32, torch.float64):
    f, p = synthetic_case(3, 8, 2, dtype=dtype)
    p = {n: v.requires_grad_() for n, v in p.items()}
    HBV(2, backend="numba")(f, p)["runoff"].sum().backward()
    res[str(dtype)] = {
        "forward": dtypes(k._forward_kernel, "prc"),
        "adjoint_tape": dtypes(k._adjoint_kernel, "traj"),
        "sensitivity": len(k._sensitivity_kernel.signatures),
        "step_fwd": floats(k._step_fwd),
        "step_vjp": floats(k._step_vjp),
    }
print(json.dumps(res))
"""


def test_compiled_specialisations_in_a_cold_cache(tmp_path):
    """In a fresh process with an empty cache: a float32 run specialises the kernels for float32
    only; the step is typed once (float64) and shared by the float32 and float64 kernels instead
    of being re-inlined into every kernel and dtype (which took minutes to compile)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", _COLD_SCRIPT], capture_output=True, text=True, env=env, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    f32, f64 = res["torch.float32"], res["torch.float64"]
    assert f32["forward"] == ["float32"] and f32["adjoint_tape"] == ["float32"]
    assert f32["sensitivity"] == 0  # never compiled when not used
    for name in ("step_fwd", "step_vjp"):
        assert f32[name] == [["float64"]], f32[name]
        assert f64[name] == [["float64"]], f64[name]  # not compiled again for float64
    assert f64["forward"] == ["float32", "float64"]
    assert f64["adjoint_tape"] == ["float32", "float64"]
    assert "compiling the HBV numba kernels (float32) once; cached in" in out.stderr


def test_chunked_parallel_run_is_bitwise_equal(make_forcing, make_params, monkeypatch):
    """Chunks of nodes on the thread pool give exactly the result of one chunk."""
    opts = {"capillary": True, "betaet": True}
    monkeypatch.setattr(_numba, "num_threads", lambda: 1)
    out1, g1 = _fwd_bwd(torch.float64, make_forcing, make_params, **opts)
    monkeypatch.setattr(_numba, "num_threads", lambda: 3)
    out3, g3 = _fwd_bwd(torch.float64, make_forcing, make_params, **opts)
    for k in ("runoff", "evapotranspiration", "soil_moisture"):
        assert torch.equal(out1[k], out3[k]), k
    for a, b in zip(g1, g3):
        assert torch.equal(a, b)


def test_run_chunks_covers_every_index_once():
    seen = np.zeros(11, dtype=np.int64)

    def kernel(start, stop, arr):
        arr[start:stop] += 1

    _numba.run_chunks(kernel, seen.size, seen, threads=4)
    assert (seen == 1).all()
    _numba.run_chunks(kernel, 0, seen, threads=4)  # empty range: nothing to do
    assert (seen == 1).all()


# ------------------------------------------------------------------------ cache directory
def test_kernels_are_cached_in_cache_dir():
    where = _numba.cache_path(hbv_numba._forward_kernel)
    assert where is not None
    assert Path(where) == _numba.cache_dir(hbv_numba.__file__)


def test_cache_dir_honours_numba_cache_dir(tmp_path):
    src = tmp_path / "pkg" / "mod.py"
    src.parent.mkdir()
    src.write_text("")
    got = _numba.cache_dir(src, environ={"NUMBA_CACHE_DIR": str(tmp_path / "nb")})
    assert got.parent == tmp_path / "nb" and got.is_dir()


def test_cache_dir_read_only_package_uses_user_cache(tmp_path, monkeypatch):
    """A wheel in a read-only site-packages: the user's cache directory, not the package's."""
    src = tmp_path / "site-packages" / "gnnhydro" / "mod.py"
    src.parent.mkdir(parents=True)
    src.write_text("")
    read_only = tmp_path / "site-packages"
    writable = _numba._writable
    monkeypatch.setattr(
        _numba, "_writable", lambda p: not Path(p).is_relative_to(read_only) and writable(p)
    )
    monkeypatch.setattr(_numba, "user_cache_dir", lambda: tmp_path / "home-cache" / "numba")
    got = _numba.cache_dir(src, environ={})
    assert got.is_relative_to(tmp_path / "home-cache" / "numba") and got.is_dir()
    assert not (src.parent / "__pycache__").exists()
    # nothing writable but the temporary directory: a per-user folder there
    monkeypatch.setattr(_numba, "user_cache_dir", lambda: read_only / "cache")
    monkeypatch.setattr(_numba.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    got = _numba.cache_dir(src, environ={})
    assert got.is_relative_to(tmp_path / "tmp") and got.is_dir()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG layout")
def test_user_cache_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _numba.user_cache_dir() == tmp_path / "gnnhydro" / "numba"


def _double(x):
    for i in range(x.size):
        x[i] *= 2.0


def test_first_compilation_is_announced_once_and_cached(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    caplog.set_level(logging.INFO, logger="gnnhydro")
    label = "test-double"
    fn = _numba.njit(kernel=label)(_double)
    x = np.ones(3, dtype=np.float32)
    fn(x)
    fn(x)
    msgs = [r.getMessage() for r in caplog.records if label in r.getMessage()]
    assert len(msgs) == 1
    assert f"compiling the {label} numba kernels (float32) once; cached in {tmp_path}" in msgs[0]
    # a new process (here: a new dispatcher on the same cache) loads instead of compiling
    _numba._ANNOUNCED.discard((label, "float32"))
    caplog.clear()
    again = _numba.njit(kernel=label)(_double)
    before = _numba.cache_stats()
    again(x)
    after = _numba.cache_stats()
    assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"]
    assert not [r for r in caplog.records if label in r.getMessage()]
    np.testing.assert_array_equal(x, 8.0)
