"""CamelsUS against the original CAMELS text files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

CFS = 0.3048**3


@pytest.fixture(scope="module")
def camels(camels_dir, tmp_path_factory):
    from gnnhydro.datasets import CamelsUS

    return CamelsUS(tmp_path_factory.mktemp("camels"), source_dir=camels_dir)


def test_basins_are_single_node_graphs(camels):
    assert len(camels) == 4
    ids = [g.node_id[0] for g in camels]
    assert ids == ["01022500", "01547700", "02064000", "03015500"]
    for g in camels:
        assert g.num_nodes == 1 and g.edge_index.shape == (2, 0)
        assert g.gauge_index.tolist() == [0] and g.gauge_id == g.node_id
        assert g.forcing.shape == (1, len(g.time), 3) and g.q_obs.shape == (1, len(g.time))
        assert "area_gages2" in g.x_names and "q_mean" not in g.x_names  # no target signatures
        assert torch.isfinite(g.x).all()


def test_01022500_values_against_raw_text(camels, camels_dir):
    g = camels[0]
    lines = (
        (camels_dir / "basin_mean_forcing/daymet/01022500_lump_cida_forcing_leap.txt")
        .read_text()
        .splitlines()
    )
    lat = float(lines[0])
    first = lines[4].split()  # 2000 01 01 12 dayl prcp srad swe tmax tmin vp
    assert first[:3] == ["2000", "01", "01"]
    assert float(g.forcing[0, 0, 0]) == pytest.approx(float(first[5]))
    assert float(g.forcing[0, 0, 1]) == pytest.approx(
        (float(first[8]) + float(first[9])) / 2, abs=1e-5
    )
    day = lines[4 + 40].split()
    assert float(g.forcing[0, 40, 0]) == pytest.approx(float(day[5]))
    from gnnhydro.units import hargreaves_pet

    pet = hargreaves_pet(np.array(float(first[9])), np.array(float(first[8])), lat, np.array(1.0))
    assert float(g.forcing[0, 0, 2]) == pytest.approx(float(pet), rel=1e-5)
    flow = (camels_dir / "usgs_streamflow/01022500_streamflow_qc.txt").read_text().splitlines()
    assert flow[0].split()[4] == "255.00"
    assert float(g.q_obs[0, 0]) == pytest.approx(255.0 * CFS, rel=1e-6)
    # streamflow ends 2002-12-31, forcing 2003-12-31: the rest is missing
    assert (
        len(g.time) == 1461
        and torch.isnan(g.q_obs[0, 1096:]).all()
        and not torch.isnan(g.q_obs[0, :1096]).any()
    )
    assert float(g.area_km2[0]) == pytest.approx(573.6)


def test_missing_discharge_and_subset(camels_dir, tmp_path):
    from gnnhydro.datasets import CamelsUS

    raw = tmp_path / "raw"
    shutil.copytree(camels_dir / "camels_attributes_v2.0", raw / "camels_attributes_v2.0")
    (raw / "basin_mean_forcing/daymet/01").mkdir(parents=True)  # HUC sub-folders as in CAMELS
    shutil.copy(
        camels_dir / "basin_mean_forcing/daymet/01022500_lump_cida_forcing_leap.txt",
        raw / "basin_mean_forcing/daymet/01",
    )
    (raw / "usgs_streamflow/01").mkdir(parents=True)
    lines = (camels_dir / "usgs_streamflow/01022500_streamflow_qc.txt").read_text().splitlines()
    lines[2] = "01022500 2000 01 03  -999.00 M"
    (raw / "usgs_streamflow/01/01022500_streamflow_qc.txt").write_text("\n".join(lines) + "\n")
    ds = CamelsUS(tmp_path, start="2000-01-01", end="2000-12-31")
    g = ds[0]
    assert len(ds) == 1 and len(g.time) == 366
    assert torch.isnan(g.q_obs[0, 2]) and not torch.isnan(g.q_obs[0, [0, 1, 3]]).any()
