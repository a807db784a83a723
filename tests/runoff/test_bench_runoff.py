"""Smoke test of ``gnnhydro bench runoff`` (tiny case)."""

from __future__ import annotations

import torch

from gnnhydro.bench.runoff import main, run_bench


def test_bench_quick(capsys):
    threads = torch.get_num_threads()
    assert main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "basin-steps/s" in text and "speed-up forward+backward" in text
    # the compile time paid (first call − second call) and whether the disk cache was hit
    assert "compile fused numba (adjoint): " in text and "first call" in text
    assert any(w in text for w in ("cold: ", "warm: cache hit", "already compiled"))
    assert torch.get_num_threads() == threads  # torch settings restored


def test_bench_outputs_agree():
    rows = run_bench(5, 30, 2, sensitivity=False)
    assert rows[-1]["max_abs_runoff_diff_fused_vs_loop_mm"] < 1e-4


def test_bench_compile_registered():
    from gnnhydro.bench import BENCHMARKS
    from gnnhydro.bench.compile import COLD_TARGET_S, WARM_TARGET_S, compile_cost

    assert BENCHMARKS["compile"] == "gnnhydro.bench.compile"
    assert (COLD_TARGET_S, WARM_TARGET_S) == (30.0, 10.0)
    c = compile_cost(lambda: None)
    assert c["compiled"] == 0 and c["loaded"] == 0 and c["compile_s"] >= 0.0
