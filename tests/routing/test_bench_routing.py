"""``gnnhydro bench routing`` runs its plain, per-reach-step and lakes rows, and the per-reach
step rows are exact against the scipy reference with the composed coefficients."""

from __future__ import annotations

from pathlib import Path

import pytest

from gnnhydro.bench import routing as bench

ROUTELINK = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "lower_colorado_tx"
    / "domain"
    / "RouteLink.nc"
)


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines() if line and line[0] != "#"}


def test_bench_rows_synthetic(capsys):
    args = ["--sizes", "300", "--depths", "deep", "--steps", "40", "--batch", "1", "--repeats", "1"]
    assert bench.main([*args, "--routelink", "/nonexistent/RouteLink.nc"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert {"deep_3e2", "deep_3e2+auto"} <= set(rows)
    header = rows["case"]
    err = header.index("max_rel_err")
    assert float(rows["deep_3e2+auto"][err]) < 1e-5  # float32 against float64 scipy
    assert float(rows["deep_3e2+auto"][header.index("fwd/plain")]) > 0


@pytest.mark.skipif(not ROUTELINK.exists(), reason="shared/data/lower_colorado_tx not present")
def test_bench_lakes_row(capsys):
    args = ["--sizes", "300", "--depths", "deep", "--steps", "24", "--batch", "1", "--repeats", "1"]
    assert bench.main([*args, "--routelink", str(ROUTELINK)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "lower_colorado+lakes" in rows
    header = rows["case"]
    assert float(rows["lower_colorado+lakes"][header.index("fwd/plain")]) > 0
