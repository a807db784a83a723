"""Overrides of a tiny synthetic training run (seconds on 2 cores), shared by the CLI tests,
and the subprocess call that runs ``gnnhydro`` with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tiny_run(num_nodes: int, *extra: str) -> list[str]:
    """``gnnhydro train`` overrides: a ``num_nodes``-reach synthetic basin over 3 years, two
    short training steps per epoch, a small parameterizer, no plots; ``extra`` appended."""
    return [
        f"dataset.num_nodes={num_nodes}",
        "dataset.years=3",
        "dataset.periods.train=[2000-01-01,2001-06-30]",
        "dataset.periods.validation=[2001-07-01,2001-12-31]",
        "dataset.periods.test=[2002-01-01,2002-12-31]",
        "dataset.warmup_days=60",
        "trainer.window_days=120",
        "trainer.steps_per_epoch=2",
        "trainer.batch_size=2",
        "trainer.progress_bar=false",
        "model.runoff.nmul=2",
        "parameterizer.hidden_channels=16",
        "parameterizer.num_layers=2",
        "export.plots=false",
        *extra,
    ]


def gnnhydro(
    *args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m gnnhydro ARGS`` in a subprocess (one OpenMP thread), output captured."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gnnhydro", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )
