"""RiverDataset caches (gnnhydro/datasets/base.py): atomic writes, unreadable files rebuilt from
raw/ (or a ValueError naming them), the attribute-statistics cache, and the forcing checks run
on every built item."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from gnnhydro.datasets import GenericRiverDataset, SyntheticRiverBasin
from gnnhydro.datasets.base import RiverDataset, atomic_torch_save
from gnnhydro.graph import RiverGraph

SMALL = dict(seed=1, num_nodes=20, years=2)


def _processed(root):
    files = sorted((root / "processed").glob("synthetic_*.pt"))
    assert len(files) == 1
    return files[0]


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _assert_same_item(a, b) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        va, vb = a[key], b[key]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb) or (va.isnan().any() and torch.equal(va.isnan(), vb.isnan()))
        elif isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        elif isinstance(va, dict):
            assert va.keys() == vb.keys()
            for k in va:
                assert torch.equal(va[k], vb[k])
        else:
            assert va == vb, key


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gnnhydro" and r.levelno == logging.WARNING
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, SyntheticRiverBasin(root, **SMALL)[0]


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_processed_file_is_rebuilt(built, tmp_path, caplog, keep):
    root, original = built
    import shutil

    shutil.copytree(root / "processed", tmp_path / "processed")
    path = _processed(tmp_path)
    _truncate(path, keep)  # a process killed while writing it (before atomic writes)
    with caplog.at_level(logging.WARNING, logger="gnnhydro"):
        again = SyntheticRiverBasin(tmp_path, **SMALL)
    notes = _warnings(caplog)
    assert len(notes) == 1 and path.name in notes[0] and "rebuilding" in notes[0]
    _assert_same_item(again[0], original)
    torch.load(path, weights_only=False)  # readable again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gnnhydro"):
        SyntheticRiverBasin(tmp_path, **SMALL)
    assert not _warnings(caplog)


def test_truncated_pyg_marker_is_dropped(built, tmp_path, caplog):
    root, original = built
    import shutil

    shutil.copytree(root / "processed", tmp_path / "processed")
    marker = tmp_path / "processed" / "pre_transform.pt"
    assert marker.exists()
    _truncate(marker, 0.3)
    with caplog.at_level(logging.WARNING, logger="gnnhydro"):
        again = SyntheticRiverBasin(tmp_path, **SMALL)
    assert any("pre_transform.pt" in m for m in _warnings(caplog))
    _assert_same_item(again[0], original)


def test_write_is_atomic(built, tmp_path, monkeypatch):
    """A write that dies half-way leaves the previous file intact and no temporary file."""
    path = tmp_path / "items.pt"
    atomic_torch_save({"a": torch.arange(3)}, path)

    def dies_half_way(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        RiverDataset._save_graphs([built[1]], str(path))
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["items.pt"]


def test_attribute_stats_cache_rebuilt(built, tmp_path, caplog):
    root, _ = built
    import shutil

    shutil.copytree(root / "processed", tmp_path / "processed")
    ds = SyntheticRiverBasin(tmp_path, **SMALL)
    nodes = torch.arange(0, 20, 2)
    mean, std = ds.attribute_stats(nodes)
    caches = sorted((tmp_path / "processed").glob("attribute_stats_*.pt"))
    assert len(caches) == 1
    _truncate(caches[0])
    with caplog.at_level(logging.WARNING, logger="gnnhydro"):
        mean2, std2 = ds.attribute_stats(nodes)
    notes = _warnings(caplog)
    assert len(notes) == 1 and caches[0].name in notes[0]
    assert torch.equal(mean, mean2) and torch.equal(std, std2)
    assert torch.equal(torch.load(caches[0], weights_only=True)["mean"], mean)


def _generic(root):
    import pandas as pd
    import xarray as xr

    raw = root / "raw"
    raw.mkdir(parents=True)
    pd.DataFrame({"id": ["a", "b"], "downstream_id": ["b", None], "area_km2": [1.0, 2.0]}).to_csv(
        raw / "nodes.csv", index=False
    )
    time = pd.date_range("2000-01-01", periods=5, freq="D")
    ones = np.ones((5, 2))
    xr.Dataset(
        {"precipitation": (("time", "id"), ones), "pet": (("time", "id"), ones)},
        coords={"time": time, "id": ["a", "b"]},
    ).to_netcdf(raw / "timeseries.nc")
    with pytest.warns(UserWarning, match="temperature"):
        return GenericRiverDataset(root)


def test_processed_without_raw_loads_and_unreadable_raises(tmp_path):
    import shutil

    g = _generic(tmp_path)[0]
    shutil.rmtree(tmp_path / "raw")
    again = GenericRiverDataset(tmp_path)[0]  # the processed file is enough
    assert torch.equal(again.forcing, g.forcing)
    (path,) = (tmp_path / "processed").glob("generic_*.pt")
    _truncate(path)
    with pytest.raises(ValueError) as err:
        GenericRiverDataset(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "force_reload=True" in msg and "raw" in msg


def test_forcing_checks_run_on_built_items(tmp_path):
    """Every dataset's items go through the shared plausibility checks in process()."""

    class Bad(RiverDataset):
        name = "bad"

        @property
        def raw_file_names(self):
            return []

        def download(self):
            pass

        def build(self):
            g = RiverGraph(edge_index=torch.zeros(2, 0, dtype=torch.long), node_id=["n1", "n2"])
            g.forcing = torch.ones(2, 4, 3)
            g.forcing[1, 2, 2] = -0.5
            g.forcing_names = ["precipitation", "temperature", "pet"]
            return [g]

    with pytest.raises(ValueError, match=r"'pet' is negative at ids \['n2'\]"):
        Bad(tmp_path)


def test_processed_version_renames_the_cache(tmp_path):
    """A dataset whose build changed (a raised ``processed_version``) does not read the caches
    of the old build; version 0 keeps the names caches had before versions existed."""

    class Old(RiverDataset):
        name = "toy"

        @property
        def raw_file_names(self):
            return []

        def download(self):
            pass

        def build(self):
            return [RiverGraph.from_edges([1, 2], [2, 0])]

    class New(Old):
        processed_version = 1

    Old.__name__ = New.__name__ = "Toy"  # the same class name: only the version differs
    old, new = Old(tmp_path / "a"), New(tmp_path / "b")
    assert old.processed_file_names != new.processed_file_names
    import hashlib
    import json

    legacy = hashlib.sha1(json.dumps({"class": "Toy"}, sort_keys=True).encode()).hexdigest()[:10]
    assert old.processed_file_names == [f"toy_{legacy}.pt"]
