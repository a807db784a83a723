"""RapidDataset on small RAPID input files written in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from gnnhydro.datasets import RapidDataset

# rapid_connect: id, downstream (0 = outlet), number of upstream, upstream ids (padded)
CONNECT = [[11, 13, 0, 0, 0], [12, 13, 0, 0, 0], [13, 14, 2, 11, 12], [14, 0, 1, 13, 0]]
BAS = [11, 12, 13, 14]
STEP = 10800.0  # 3-hourly


def write(
    root, *, inflow_ids=(14, 13, 12, 11), k=(3600.0, 3600.0, 7200.0, 9000.0), obs=True, units="m3"
):
    raw = root / "raw"
    raw.mkdir(parents=True)
    pd.DataFrame(CONNECT).to_csv(raw / "rapid_connect.csv", header=False, index=False)
    pd.Series(BAS).to_csv(raw / "riv_bas_id.csv", header=False, index=False)
    pd.Series(k).to_csv(raw / "k.csv", header=False, index=False)
    pd.Series([0.2, 0.25, 0.3, 0.1]).to_csv(raw / "x.csv", header=False, index=False)
    t = 6
    vol = np.arange(t * len(inflow_ids), dtype=np.float64).reshape(t, -1) * 1000.0
    ds = xr.Dataset(
        {"m3_riv": (("time", "rivid"), vol, {"units": units})},
        coords={
            "time": pd.date_range("2010-01-01", periods=t, freq=pd.Timedelta(seconds=STEP)),
            "rivid": list(inflow_ids),
        },
    )
    ds.to_netcdf(raw / "m3_riv.nc")
    if obs:
        pd.Series([14]).to_csv(raw / "obs_tot_id.csv", header=False, index=False)
        pd.DataFrame({"q": [1.0, 2.0, -9999.0, 4.0, 5.0, 6.0]}).to_csv(
            raw / "Qobs.csv", header=False, index=False
        )
    return root, vol


def test_rapid_round_trip(tmp_path):
    root, vol = write(tmp_path)
    g = RapidDataset(root)[0]
    assert g.node_id == BAS and g.outlets.tolist() == [3]
    assert g.step_seconds == STEP and g.lateral_inflow.shape == (4, 6)
    # inflow file order is 14, 13, 12, 11: reach 11 is the last column
    np.testing.assert_allclose(g.lateral_inflow[0].numpy(), vol[:, 3] / STEP, rtol=1e-6)
    np.testing.assert_allclose(g.lateral_inflow[3].numpy(), vol[:, 0] / STEP, rtol=1e-6)
    assert g.musk_s.tolist() == [3600.0, 3600.0, 7200.0, 9000.0]
    assert g.x_names == ["musk_s", "musx"] and g.x.shape == (4, 2)
    assert g.gauge_index.tolist() == [3] and g.gauge_id == ["14"]
    assert (
        torch.isnan(g.q_obs[3, 2])
        and float(g.q_obs[3, 5]) == 6.0
        and torch.isnan(g.q_obs[:3]).all()
    )


def test_rapid_bad_inputs(tmp_path):
    root, _ = write(tmp_path / "a", inflow_ids=(14, 13, 12, 99))
    with pytest.raises(ValueError, match="99"):
        RapidDataset(root)
    root, _ = write(tmp_path / "b", k=(3600.0, -1.0, 7200.0, 9000.0))
    with pytest.raises(ValueError, match="12"):
        RapidDataset(root)
    root, _ = write(tmp_path / "c", units="furlongs")
    with pytest.raises(ValueError, match="furlongs"):
        RapidDataset(root)
