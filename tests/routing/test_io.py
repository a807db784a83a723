"""Routing I/O: RAPID round trip (files written here) and the real NWM Lower Colorado domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from gnnhydro.routing import route
from gnnhydro.routing.io import read_nwm, read_rapid, write_qout
from tests.routing.reference import muskingum_coefs, route_sequential


def test_rapid_files_roundtrip(tmp_path):
    # ids deliberately not in file order in m3_riv; 30 → 20 → 10 (outlet), 40 → 20
    (tmp_path / "rapid_connect.csv").write_text("30,20,0\n40,20,0\n20,10,2,30,40\n10,0,1,20\n")
    (tmp_path / "k.csv").write_text("7200\n3600\n10800\n1800\n")
    (tmp_path / "x.csv").write_text("0.1\n0.2\n0.3\n0.25\n")
    T, dt = 12, 3600.0
    rng = np.random.default_rng(0)
    vol = rng.random((T, 4)) * dt  # m³ per step
    rivid = np.array([10, 40, 30, 20])
    times = np.datetime64("2020-01-01T01") + np.arange(T) * np.timedelta64(1, "h")
    xr.Dataset(
        {"m3_riv": (("time", "rivid"), vol)}, coords={"rivid": rivid, "time": times}
    ).to_netcdf(tmp_path / "m3_riv.nc")
    inp = read_rapid(
        tmp_path / "rapid_connect.csv",
        tmp_path / "k.csv",
        tmp_path / "x.csv",
        tmp_path / "m3_riv.nc",
        dtype=torch.float64,
    )
    g = inp.graph
    assert inp.step_seconds == dt
    assert g.node_id == [30, 40, 20, 10]
    np.testing.assert_allclose(inp.params["k"].numpy(), [2.0, 1.0, 3.0, 0.5])
    # lateral matched by id: reach 20 is column 3 of the file
    np.testing.assert_allclose(inp.lateral[2].numpy(), vol[:, 3] / dt)
    q = route(inp.lateral, g, "muskingum", inp.params)
    ref = route_sequential(
        inp.lateral.numpy(),
        g.edge_index.numpy(),
        None,
        coefs=muskingum_coefs(inp.params["k"].numpy(), inp.params["x"].numpy()),
    )
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-12)
    out = write_qout(tmp_path / "Qout.nc", q, g.node_id, inp.times)
    with xr.open_dataset(out) as ds:
        assert ds["Qout"].attrs["units"] == "m3 s-1"
        np.testing.assert_allclose(ds["Qout"].values, q.numpy().T, rtol=1e-6)
        assert ds["rivid"].values.tolist() == [30, 40, 20, 10]


def test_nwm_lower_colorado(shared_data):
    dom = shared_data / "lower_colorado_tx"
    if not (dom / "domain" / "RouteLink.nc").exists():
        pytest.skip("Lower Colorado RouteLink not found")
    inp = read_nwm(dom / "domain" / "RouteLink.nc", dom / "channel_forcing")
    g = inp.graph
    assert inp.step_seconds == 3600.0 and inp.lateral.shape == (g.num_nodes, 28)
    # by-id alignment: compare one reach against the file directly
    first = sorted((dom / "channel_forcing").iterdir())[0]
    with xr.open_dataset(first) as ds:
        fid = int(ds["feature_id"].values[100])
        val = float(ds["q_lateral"].values[100])
    i = int(g.index_of([fid])[0])
    assert inp.lateral[i, 0].item() == pytest.approx(val, rel=1e-6)
    assert torch.allclose(inp.params["k"], torch.ones(1))  # MusK = 3600 s = one hourly step
    q = route(inp.lateral, g, "muskingum", inp.params)
    ref = route_sequential(
        inp.lateral.double().numpy(),
        g.edge_index.numpy(),
        g.edge_weight.double().numpy(),
        coefs=muskingum_coefs(inp.params["k"].double().numpy(), inp.params["x"].double().numpy()),
    )
    np.testing.assert_allclose(q.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
