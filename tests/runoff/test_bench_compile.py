"""``gnnhydro bench compile``: argument handling, the ``--inline`` comparison and its output, and
the inlining switch of :mod:`gnnhydro._numba` — without compiling any kernel (the workload
subprocess is replaced by a stub)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gnnhydro import _numba
from gnnhydro.bench import compile as bc


def test_parse_args():
    assert bc.parse_args([]).inline is None
    assert bc.parse_args(["--inline", "both", "--timeout", "60"]).inline == "both"
    for bad in (["--inline", "always"], ["--timeout", "0"]):
        with pytest.raises(SystemExit):
            bc.parse_args(bad)


def _result(wall, parts=None, timed_out=False, inline="llvm"):
    return {
        "wall_s": wall,
        "parts": parts or {},
        "inline": inline,
        "stderr": "gnnhydro: compiling the HBV numba kernels (float32) once; cached in X\n",
        "timed_out": timed_out,
    }


class _Stub:
    """Stands in for :func:`run_workload_subprocess`: records each call and returns the next
    of ``walls[mode]`` (seconds; ``None`` = timed out)."""

    def __init__(self, walls):
        self.walls = {m: list(w) for m, w in walls.items()}
        self.calls = []

    def __call__(self, cache_dir, *, env=None, inline=None, timeout=None):
        empty = not any(Path(cache_dir).iterdir())
        self.calls.append((Path(cache_dir), inline, timeout, empty))
        Path(cache_dir, f"run{len(self.calls)}").touch()  # the cache fills up
        wall = self.walls[inline].pop(0)
        if wall is None:
            return _result(timeout, timed_out=True, inline=inline)
        return _result(wall, {"hbv_float32": wall / 4, "gr4j_float32": wall / 8}, inline=inline)


def test_inline_both_runs_each_mode_cold_then_warm_in_its_own_cache(tmp_path, monkeypatch, capsys):
    stub = _Stub({"llvm": [12.0, 4.0], "numba": [48.0, 5.0]})
    monkeypatch.setattr(bc, "run_workload_subprocess", stub)
    assert bc.main(["--inline", "both", "--cache-dir", str(tmp_path), "--check"]) == 0
    out = capsys.readouterr().out
    (d1, m1, _, e1), (d2, m2, _, e2), (d3, m3, _, e3), (d4, m4, _, e4) = stub.calls
    assert [m1, m2, m3, m4] == ["llvm", "llvm", "numba", "numba"]
    assert d1 == d2 == tmp_path / "llvm" and d3 == d4 == tmp_path / "numba"
    assert (e1, e2, e3, e4) == (True, False, True, False)  # cold in an empty cache, then warm
    lines = out.splitlines()
    assert lines[0].startswith("# gnnhydro bench compile:") and "inlining both" in lines[0]
    assert any(ln.startswith("llvm cold:    12.0 s  (target ≤ 30 s: met)") for ln in lines)
    assert any(ln.startswith("numba cold:    48.0 s  (target ≤ 30 s: MISSED)") for ln in lines)
    assert "hbv_float32 3.0 s, gr4j_float32 1.5 s" in out
    assert lines[-2:] == [
        "cold: llvm 12.0 s, numba 48.0 s  (numba/llvm 4.0×)",
        "warm: llvm 4.0 s, numba 5.0 s  (numba/llvm 1.2×)",
    ]


def test_timed_out_run_is_reported_as_a_lower_bound(tmp_path, monkeypatch, capsys):
    stub = _Stub({"llvm": [10.0, 3.0], "numba": [None]})
    monkeypatch.setattr(bc, "run_workload_subprocess", stub)
    assert bc.main(["--inline", "both", "--timeout", "900", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert len(stub.calls) == 3  # no warm run after a cold one that was stopped
    assert stub.calls[-1][2] == 900.0
    assert "numba cold: > 15.0 min  (target ≤ 30 s: MISSED; stopped after the timeout)" in out
    assert out.splitlines()[-2:] == [
        "cold: llvm 10.0 s, numba > 15.0 min  (numba/llvm > 90.0×)",
        "warm: llvm 3.0 s, numba -",
    ]


def test_default_run_keeps_its_format(tmp_path, monkeypatch, capsys):
    stub = _Stub({None: [35.0, 2.0]})
    monkeypatch.setattr(bc, "run_workload_subprocess", stub)
    assert bc.main(["--cache-dir", str(tmp_path), "--check"]) == 1  # cold target missed
    out = capsys.readouterr().out.splitlines()
    assert [c[0] for c in stub.calls] == [tmp_path, tmp_path] and stub.calls[0][1] is None
    assert out[1].startswith("cold:    35.0 s  (target ≤ 30 s: MISSED)  [start-up+imports 21.9 s")
    assert out[2].startswith("    gnnhydro: compiling the HBV numba kernels")
    assert out[3].startswith("warm:     2.0 s  (target ≤ 10 s: met)")
    assert len(out) == 5  # no comparison lines for a single mode


def test_workload_subprocess_passes_the_mode_and_handles_a_timeout(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, *, env, timeout, **kw):
        seen.update(env=env, timeout=timeout, cmd=cmd)
        body = json.dumps({"parts": {"hbv_float32": 1.0}, "inline": env[_numba.INLINE_ENV]})
        return subprocess.CompletedProcess(cmd, 0, stdout=f"noise\n{body}\n", stderr="")

    monkeypatch.setattr(bc.subprocess, "run", fake_run)
    res = bc.run_workload_subprocess(tmp_path, env={}, inline="numba", timeout=5.0)
    assert seen["env"]["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert seen["env"][_numba.INLINE_ENV] == "numba" and seen["timeout"] == 5.0
    assert seen["cmd"][-1] == "--child"
    assert res["parts"] == {"hbv_float32": 1.0} and res["inline"] == "numba"
    assert not res["timed_out"]

    def slow_run(cmd, *, timeout, **kw):
        raise subprocess.TimeoutExpired(cmd, timeout, stderr=b"gnnhydro: compiling")

    monkeypatch.setattr(bc.subprocess, "run", slow_run)
    res = bc.run_workload_subprocess(tmp_path, env={}, inline="numba", timeout=5.0)
    assert res["timed_out"] and res["wall_s"] == 5.0 and res["stderr"] == "gnnhydro: compiling"


def test_inline_mode_is_read_from_one_environment_variable():
    assert _numba.inline_mode({}) == "llvm"
    assert _numba.inline_mode({_numba.INLINE_ENV: ""}) == "llvm"
    assert _numba.inline_mode({_numba.INLINE_ENV: " Numba "}) == "numba"
    with pytest.raises(ValueError, match=r"^GNNHYDRO_NUMBA_INLINE='always': expected one of"):
        _numba.inline_mode({_numba.INLINE_ENV: "always"})


@pytest.mark.parametrize(
    "mode,expected",
    [("llvm", {"forceinline": True}), ("numba", {"inline": "always"})],
)
def test_forceinline_helpers_follow_the_mode(mode, expected, monkeypatch):
    """The kernels' ``forceinline=True`` helpers become numba-IR ``inline="always"`` ones in
    the ``numba`` mode (dispatchers are made, nothing is compiled)."""
    monkeypatch.setattr(_numba, "INLINE", mode)
    disp = _numba.njit(fastmath=False, forceinline=True)(lambda x: x + 1.0)
    opts = disp.targetoptions
    assert {k: opts[k] for k in expected} == expected
    assert ("forceinline" in opts) == (mode == "llvm")
    assert opts.get("inline", "never") == ("always" if mode == "numba" else "never")
    kernel = _numba.njit(nogil=True)(lambda x: x)  # kernels themselves are never inlined
    assert "inline" not in kernel.targetoptions and "forceinline" not in kernel.targetoptions
