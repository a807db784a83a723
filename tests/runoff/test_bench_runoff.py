"""Smoke test of ``gnnhydro bench runoff`` (tiny case)."""

from __future__ import annotations

import torch

from gnnhydro.bench.runoff import main, run_bench


def test_bench_quick(capsys):
    threads = torch.get_num_threads()
    assert main(["--quick"]) == 0
    text = capsys.readouterr().out
    assert "basin-steps/s" in text and "speed-up forward+backward" in text
    assert torch.get_num_threads() == threads  # torch settings restored


def test_bench_outputs_agree():
    rows = run_bench(5, 30, 2, sensitivity=False)
    assert rows[-1]["max_abs_runoff_diff_fused_vs_loop_mm"] < 1e-4
