"""NWMDomain against the raw t-route Lower Colorado files read independently with netCDF4."""

from __future__ import annotations

from datetime import datetime, timedelta

import netCDF4
import numpy as np
import pytest
import torch


def test_domain_shapes(nwm):
    g = nwm[0]
    assert g.num_nodes == 11248
    assert g.lateral_inflow.shape == (11248, 28) and g.q_nwm.shape == (11248, 28)
    assert g.step_seconds == 3600.0
    assert str(g.time[0]).startswith("2021-08-23T13:00") and str(g.time[-1]).startswith(
        "2021-08-24T16:00"
    )
    assert np.all(np.diff(g.time).astype("timedelta64[s]").astype(int) == 3600)
    assert g.x.shape == (11248, len(g.x_names)) and torch.isfinite(g.x).all()
    assert int(g.lake_mask.sum()) == 371
    assert (g.lake_area_km2[g.lake_mask] > 0).all() and (g.lake_area_km2[~g.lake_mask] == 0).all()


def test_lateral_inflow_matched_by_feature_id(nwm, nwm_dir):
    g = nwm[0]
    path = nwm_dir / "channel_forcing" / "202108240500.CHRTOUT_DOMAIN1"
    with netCDF4.Dataset(path) as ds:
        fid = np.asarray(ds["feature_id"][:])
        qlat = np.asarray(ds["q_lateral"][:], dtype=np.float64)
        flow = np.asarray(ds["streamflow"][:], dtype=np.float64)
    k = list(g.time.astype("datetime64[h]").astype(str)).index("2021-08-24T05")
    for j in (0, 5000, int(np.argmax(qlat))):
        node = int(g.index_of(int(fid[j])))
        assert float(g.lateral_inflow[node, k]) == pytest.approx(qlat[j], rel=1e-6, abs=1e-7)
        assert float(g.q_nwm[node, k]) == pytest.approx(flow[j], rel=1e-6, abs=1e-7)


def test_hourly_observations(nwm, nwm_dir):
    g = nwm[0]
    assert g.gauge_index.numel() > 0 and g.unmatched_gauge_id == []
    k = list(g.time.astype("datetime64[h]").astype(str)).index("2021-08-23T18")
    pick = next(
        p for p in range(g.gauge_index.numel()) if not torch.isnan(g.q_obs[g.gauge_index[p], k])
    )
    gid, node = g.gauge_id[pick], int(g.gauge_index[pick])
    assert g.gages[node].strip() == gid
    # independent hourly mean over [t - 30 min, t + 30 min) at t = 2021-08-23 18:00
    t = datetime(2021, 8, 23, 18)
    values = {}
    for f in sorted((nwm_dir / "usgs_TimeSlice").glob("*.ncdf")):
        with netCDF4.Dataset(f) as ds:
            ids = [
                bytes(s).decode().strip()
                for s in netCDF4.chartostring(ds["stationId"][:], encoding="bytes")
            ]
            times = [
                bytes(s).decode().strip()
                for s in netCDF4.chartostring(ds["time"][:], encoding="bytes")
            ]
            q = np.asarray(ds["discharge"][:], dtype=np.float64)
            qual = np.asarray(ds["discharge_quality"][:])
        for i, s, v, ql in zip(ids, times, q, qual, strict=True):
            when = datetime.strptime(s, "%Y-%m-%d_%H:%M:%S")
            if (
                i == gid
                and ql > 0
                and np.isfinite(v)
                and t - timedelta(minutes=30) <= when < t + timedelta(minutes=30)
            ):
                values[when] = v
    assert len(values) >= 2
    assert float(g.q_obs[node, k]) == pytest.approx(np.mean(list(values.values())), rel=1e-5)
    assert torch.isnan(g.q_obs[:, -1]).all()  # no observation files for 2021-08-24
    assert torch.isnan(g.q_obs[~g.gauge_mask]).all()
