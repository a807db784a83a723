"""Routing I/O: RAPID round trip (files written here) and the real NWM Lower Colorado domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from gnnhydro.routing import route
from gnnhydro.routing.io import read_nwm, read_rapid, route_files, write_qout
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


# --- route from files uses the checked readers: what the dataset rejects, `gnnhydro route` rejects

# a tiny NWM domain: 1 → 3, 2 → 3, 3 → 4 (outlet); MusK = 3600 s, MusX = 0.2
LINK = [1, 2, 3, 4]
T0 = np.datetime64("2021-08-23T13:00", "ns")
HOUR = np.timedelta64(3600, "s")


def write_routelink(path):
    n = len(LINK)
    xr.Dataset(
        {
            "link": ("feature_id", np.array(LINK, dtype=np.int64)),
            "to": ("feature_id", np.array([3, 3, 4, 0], dtype=np.int64)),
            "MusK": ("feature_id", np.full(n, 3600.0)),
            "MusX": ("feature_id", np.full(n, 0.2)),
            "Length": ("feature_id", np.full(n, 1000.0)),
        }
    ).to_netcdf(path)
    return path


def write_chrtout(path, when, q_lateral, *, feature_id=(4, 2, 3, 1), units="m3 s-1"):
    """One CHRTOUT file at ``when`` with ``q_lateral`` given in ``feature_id`` order (a file
    order deliberately unlike RouteLink's)."""
    q = np.asarray(q_lateral, dtype=np.float32)
    xr.Dataset(
        {
            "q_lateral": ("feature_id", q, {"units": units}),
            "streamflow": ("feature_id", 2 * q, {"units": "m3 s-1"}),
        },
        coords={"feature_id": np.asarray(feature_id, dtype=np.int64), "time": [when]},
    ).to_netcdf(path)
    return path


def nwm_domain(tmp_path, hours=(0, 1, 2, 3), names=None, **kwargs):
    """RouteLink + CHRTOUT files (one per hour in ``hours``, named ``names``); returns
    ``(routelink, chrtout_dir, lateral [N, T] in RouteLink order and time order)``."""
    rl = write_routelink(tmp_path / "RouteLink.nc")
    folder = tmp_path / "channel_forcing"
    folder.mkdir()
    names = names or [f"{h:02d}.CHRTOUT_DOMAIN1" for h in hours]
    by_time = {}
    for h, name in zip(hours, names, strict=True):
        q_file = 0.5 + np.arange(4) + 10.0 * h  # in file order 4, 2, 3, 1
        write_chrtout(folder / name, T0 + h * HOUR, q_file, **kwargs)
        by_time[h] = q_file[[3, 1, 2, 0]]  # RouteLink order 1, 2, 3, 4
    lateral = np.stack([by_time[h] for h in sorted(hours)], 1)
    return rl, folder, lateral


def test_read_nwm_matches_feature_ids(tmp_path):
    rl, folder, lateral = nwm_domain(tmp_path)
    inp = read_nwm(rl, folder, dtype=torch.float64)
    assert inp.graph.node_id == LINK and inp.step_seconds == 3600.0
    np.testing.assert_array_equal(inp.lateral.numpy(), lateral)
    np.testing.assert_array_equal(inp.times, T0 + np.arange(4) * HOUR)
    np.testing.assert_allclose(inp.params["k"].numpy(), 1.0)


def test_route_files_rejects_chrtout_time_gap(tmp_path, capsys):
    from gnnhydro.cli import main

    rl, folder, _ = nwm_domain(tmp_path, hours=(0, 1, 3, 4))
    with pytest.raises(ValueError, match=r"gap between 2021-08-23T14:00.* and 2021-08-23T16:00"):
        route_files(routelink=rl, chrtout=folder, out=tmp_path / "q.nc")
    with pytest.raises(SystemExit) as exit_info:
        main(["route", f"routelink={rl}", f"chrtout={folder}/*.CHRTOUT_DOMAIN1", "out=q.nc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "time gap" in err
    assert not (tmp_path / "q.nc").exists()


def test_route_files_sorts_chrtout_by_time_not_name(tmp_path):
    # names sort as hours 2, 0, 3, 1; the files' time decides the order
    names = ["a.CHRTOUT_DOMAIN1", "c.CHRTOUT_DOMAIN1", "b.CHRTOUT_DOMAIN1", "d.CHRTOUT_DOMAIN1"]
    rl, folder, lateral = nwm_domain(tmp_path, hours=(2, 0, 3, 1), names=names)
    inp = read_nwm(rl, sorted(folder.iterdir()), dtype=torch.float64)
    np.testing.assert_array_equal(inp.lateral.numpy(), lateral)
    out = route_files(routelink=rl, chrtout=f"{folder}/*.CHRTOUT_DOMAIN1", out=tmp_path / "q.nc")
    expected = route(
        torch.as_tensor(lateral, dtype=torch.float32),
        inp.graph,
        "muskingum",
        {"k": torch.ones(4), "x": torch.full((4,), 0.2)},
    )
    with xr.open_dataset(out) as ds:
        np.testing.assert_array_equal(ds["time"].values, T0 + np.arange(4) * HOUR)
        q = ds["discharge"].transpose("time", ...).values
    np.testing.assert_allclose(q.T, expected.numpy(), rtol=1e-6)


def test_route_files_rejects_lateral_not_a_discharge(tmp_path):
    rl, folder, _ = nwm_domain(tmp_path, units="mm")
    with pytest.raises(ValueError, match=r"q_lateral.*'mm'"):
        route_files(routelink=rl, chrtout=folder, out=tmp_path / "q.nc")


def test_read_nwm_converts_cfs(tmp_path):
    rl, folder, lateral = nwm_domain(tmp_path, units="ft3 s-1")
    inp = read_nwm(rl, folder, dtype=torch.float64)
    np.testing.assert_allclose(inp.lateral.numpy(), lateral * 0.3048**3, rtol=1e-6)


def test_route_files_rejects_unknown_and_missing_feature_ids(tmp_path):
    rl, folder, _ = nwm_domain(tmp_path, feature_id=(4, 2, 99, 1))
    with pytest.raises(ValueError, match=r"not in the river network: \[?99"):
        route_files(routelink=rl, chrtout=folder, out=tmp_path / "q.nc")
    (tmp_path / "b").mkdir()
    rl, folder, _ = nwm_domain(tmp_path / "b")
    write_chrtout(folder / "04.CHRTOUT_DOMAIN1", T0 + 4 * HOUR, [1, 2, 3], feature_id=(4, 2, 1))
    with pytest.raises(ValueError, match=r"04.CHRTOUT_DOMAIN1 feature_id: network ids missing.*3"):
        read_nwm(rl, folder)


def test_read_nwm_rejects_nan_lateral_and_one_file_without_step(tmp_path):
    rl, folder, _ = nwm_domain(tmp_path)
    write_chrtout(folder / "04.CHRTOUT_DOMAIN1", T0 + 4 * HOUR, [1, np.nan, 3, 4])
    with pytest.raises(ValueError, match=r"q_lateral has NaN/inf at feature_id \[?2"):
        read_nwm(rl, folder)
    with pytest.raises(ValueError, match="step_seconds"):
        read_nwm(rl, folder / "00.CHRTOUT_DOMAIN1")
    inp = read_nwm(rl, folder / "00.CHRTOUT_DOMAIN1", step_seconds=3600.0)
    assert inp.lateral.shape == (4, 1) and inp.step_seconds == 3600.0


def write_rapid(
    tmp_path, *, units="m3", rivid=(10, 40, 30, 20), k=(7200, 3600, 10800, 1800), gap=False
):
    (tmp_path / "rapid_connect.csv").write_text("30,20,0\n40,20,0\n20,10,2,30,40\n10,0,1,20\n")
    (tmp_path / "k.csv").write_text("".join(f"{v}\n" for v in k))
    (tmp_path / "x.csv").write_text("0.1\n0.2\n0.3\n0.25\n")
    hours = np.arange(6) + (np.arange(6) >= 3) * gap
    times = np.datetime64("2020-01-01T01") + hours * np.timedelta64(1, "h")
    xr.Dataset(
        {"m3_riv": (("time", "rivid"), np.ones((6, 4)) * 3600.0, {"units": units})},
        coords={"rivid": list(rivid), "time": times},
    ).to_netcdf(tmp_path / "m3_riv.nc")
    return {
        "rapid_connect": tmp_path / "rapid_connect.csv",
        "k": tmp_path / "k.csv",
        "x": tmp_path / "x.csv",
        "inflow": tmp_path / "m3_riv.nc",
        "out": tmp_path / "Qout.nc",
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"units": "furlongs"}, "furlongs"),
        ({"rivid": (10, 40, 99, 20)}, "99"),
        ({"gap": True}, "gap between"),
        ({"k": (7200, -1, 10800, 1800)}, r"non-positive Muskingum k at reaches \[?40"),
    ],
)
def test_route_files_rejects_bad_rapid_inputs(tmp_path, kwargs, match):
    files = write_rapid(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=match):
        route_files(**files)


def test_route_files_rapid_m3s_inflow_is_converted(tmp_path):
    a = route_files(**write_rapid(tmp_path))  # 3600 m³ per hourly step = 1 m³/s
    (tmp_path / "b").mkdir()
    files = write_rapid(tmp_path / "b", units="m3/s")
    with xr.open_dataset(files["inflow"]) as ds:
        rate = ds.assign(m3_riv=ds["m3_riv"] / 3600.0)
        rate["m3_riv"].attrs["units"] = "m3/s"
        rate.load()
    rate.to_netcdf(files["inflow"])
    b = route_files(**files)
    with xr.open_dataset(a) as qa, xr.open_dataset(b) as qb:
        np.testing.assert_allclose(qb["Qout"].values, qa["Qout"].values, rtol=1e-6)


def test_dataset_and_read_nwm_read_the_same_lateral_inflow(shared_data, tmp_path):
    from gnnhydro.datasets import NWMDomain

    dom = shared_data / "lower_colorado_tx"
    if not (dom / "domain" / "RouteLink.nc").exists():
        pytest.skip("Lower Colorado RouteLink not found")
    g = NWMDomain(tmp_path / "nwm", source_dir=dom)[0]
    inp = read_nwm(dom / "domain" / "RouteLink.nc", dom / "channel_forcing")
    assert inp.graph.node_id == g.node_id
    assert torch.equal(inp.lateral, g.lateral_inflow)
    np.testing.assert_array_equal(inp.times, g.time)
    assert inp.step_seconds == g.step_seconds
