"""The summary of a hydra multirun sweep: ``<run_dir>_multirun/summary.csv``, one row per job
with its overrides and the median metrics of every split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["write_summary"]


def write_summary(sweep_dir: str | Path) -> Path | None:
    """(Re)write ``summary.csv`` of ``sweep_dir`` from every finished job in it: columns
    ``job``, ``overrides`` (space-separated ``key=value``), ``run_dir`` and, per split,
    ``<split>_median_nse``, ``<split>_median_kge``, ``<split>_n_gauges``. Returns the path, or
    ``None`` when no job has finished yet."""
    sweep_dir = Path(sweep_dir)
    rows = []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "metrics_summary.csv").exists()]
    for job in sorted(jobs, key=lambda p: (len(p.name), p.name)):
        record = json.loads((job / "provenance.json").read_text())
        row = {
            "job": job.name,
            "overrides": " ".join(record.get("overrides", [])),
            "run_dir": str(job),
        }
        summary = pd.read_csv(job / "metrics_summary.csv", index_col="split")
        for split, values in summary.iterrows():
            row[f"{split}_median_nse"] = values["nse"]
            row[f"{split}_median_kge"] = values["kge"]
            row[f"{split}_n_gauges"] = values.get("n_gauges")
        rows.append(row)
    if not rows:
        return None
    path = sweep_dir / "summary.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
