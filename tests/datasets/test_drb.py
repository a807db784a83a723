"""DelawareRiverBasin against the raw pywatershed files read independently with netCDF4."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import torch

CFS = 0.3048**3  # m³/s per ft³/s
ACRE_KM2 = 4046.8564224e-6


def _nc(path: Path, *names: str) -> list[np.ndarray]:
    with netCDF4.Dataset(path) as ds:
        return [np.asarray(ds[n][:]) for n in names]


def test_network_and_shapes(drb):
    g = drb[0]
    assert len(drb) == 1
    assert g.num_nodes == 456
    assert g.outlets.numel() == 6
    assert g.forcing.shape == (456, 731, 3)
    assert g.forcing_names == ["precipitation", "temperature", "pet"]
    assert g.forcing_units == ["mm/step", "degC", "mm/step"]
    assert g.q_obs.shape == (456, 731)
    assert g.x.shape == (456, len(g.x_names)) == (456, len(g.x_units))
    assert torch.isfinite(g.x).all() and torch.isfinite(g.forcing).all()
    assert g.step_seconds == 86400.0
    assert str(g.time[0])[:10] == "1979-01-01" and str(g.time[-1])[:10] == "1980-12-31"


def test_gauges_matched_by_id(drb, drb_dir):
    g = drb[0]
    poi_seg, poi_id = _nc(drb_dir / "parameters_dis_seg.nc", "poi_gage_segment", "poi_gage_id")
    obs_id, q_cfs = _nc(drb_dir / "drb_2yr_gage_poi_obs.nc", "poi_id", "discharge")
    poi_id = [str(s).strip() for s in poi_id]
    obs_id = [str(s).strip() for s in obs_id]
    assert poi_id != obs_id  # the two files list gauges in different orders
    with_data = [
        obs_id[k]
        for k in np.flatnonzero(np.isfinite(np.ma.filled(q_cfs.astype(float), np.nan)).any(1))
    ]
    assert g.gauge_index.numel() == len(with_data) == 103 and int(g.gauge_mask.sum()) == 103
    assert sorted(g.gauge_id) == sorted(with_data)
    assert sorted(g.gauge_id + g.gauge_id_no_data) == sorted(poi_id)
    assert g.gauge_index.tolist() == sorted(g.gauge_index.tolist())
    for gid in ("01469500", with_data[0], with_data[-1]):
        node = int(poi_seg[poi_id.index(gid)]) - 1
        assert g.gauge_id[int((g.gauge_index == node).nonzero())] == gid
        assert g.node_id[node] == g.node_id[int(g.index_of(g.node_id[node]))]
        raw = np.ma.filled(q_cfs[obs_id.index(gid)].astype(np.float64), np.nan)
        first = int(np.flatnonzero(np.isfinite(raw))[0])
        assert float(g.q_obs[node, first]) == pytest.approx(raw[first] * CFS, rel=1e-6)
        assert torch.isnan(g.q_obs[node, :first]).all()
    assert torch.isnan(g.q_obs[~g.gauge_mask]).all()


def test_area_aggregation_is_mass_consistent(drb, drb_dir):
    g = drb[0]
    (area_acres,) = _nc(drb_dir / "parameters_dis_hru.nc", "hru_area")
    (hru_segment,) = _nc(drb_dir / "parameters_PRMSChannel.nc", "hru_segment")
    mapped = hru_segment > 0
    assert float(g.area_km2.double().sum()) == pytest.approx(
        float(area_acres[mapped].sum()) * ACRE_KM2, rel=1e-6
    )
    assert g.unmapped_hru_area_km2 == pytest.approx(
        float(area_acres[~mapped].sum()) * ACRE_KM2, rel=1e-9
    )
    expected = np.zeros(456)
    np.add.at(expected, hru_segment[mapped] - 1, area_acres[mapped] * ACRE_KM2)
    np.testing.assert_allclose(g.area_km2.numpy(), expected, rtol=1e-5)
    no_hru = g.area_km2 == 0
    assert int(no_hru.sum()) == 40 and not g.has_catchment[no_hru].any()


def test_forcing_units_on_single_hru_reach(drb, drb_dir):
    g = drb[0]
    (hru_segment,) = _nc(drb_dir / "parameters_PRMSChannel.nc", "hru_segment")
    (hru_nhm,) = _nc(drb_dir / "parameters_dis_hru.nc", "nhm_id")
    counts = np.bincount(hru_segment, minlength=457)
    seg = int(np.flatnonzero(counts[1:] == 1)[0]) + 1
    hru = int(np.flatnonzero(hru_segment == seg)[0])
    prcp, ids = _nc(drb_dir / "prcp.nc", "prcp", "nhm_id")
    (tmax,) = _nc(drb_dir / "tmax.nc", "tmax")
    (tmin,) = _nc(drb_dir / "tmin.nc", "tmin")
    col = int(np.flatnonzero(ids == hru_nhm[hru])[0])
    node = seg - 1
    np.testing.assert_allclose(
        g.forcing[node, :, 0].numpy(), prcp[:, col] * 25.4, rtol=1e-5, atol=1e-5
    )
    t_c = ((tmax[:, col].astype(np.float64) + tmin[:, col]) / 2 - 32.0) * 5.0 / 9.0
    np.testing.assert_allclose(g.forcing[node, :, 1].numpy(), t_c, rtol=1e-5, atol=1e-4)
    assert (g.forcing[..., 2] >= 0).all() and float(g.forcing[..., 2].mean()) == pytest.approx(
        2.76, abs=0.5
    )


def test_reaches_without_hru_borrow_from_donor(drb):
    from gnnhydro.datasets.drb import donor_reaches

    g = drb[0]
    has = g.has_catchment.numpy()
    donor = donor_reaches(g, has)
    empty = np.flatnonzero(~has)
    assert (donor[empty] >= 0).all() and has[donor[empty]].all()
    i = int(empty[0])
    assert torch.equal(g.forcing[i], g.forcing[int(donor[i])])
    j = g.x_names.index("elevation_m")
    assert float(g.x[i, j]) == float(g.x[int(donor[i]), j])


def test_processed_reload_and_stats(drb):
    from gnnhydro.datasets import DelawareRiverBasin

    again = DelawareRiverBasin(drb.root)
    a, b = drb[0], again[0]
    assert torch.equal(a.forcing, b.forcing) and np.array_equal(a.time, b.time)
    assert a.node_id == b.node_id and torch.equal(a.edge_index, b.edge_index)
    train = torch.arange(0, 456, 2)
    mean, std = drb.attribute_stats(train)
    np.testing.assert_allclose(mean.numpy(), a.x[train].double().mean(0).numpy(), rtol=1e-5)
    assert (std > 0).all()
    assert any(Path(drb.processed_dir).glob("attribute_stats_*.pt"))
    mean2, _ = again.attribute_stats(train)  # from the cache
    assert torch.equal(mean, mean2)


def test_prms_climate_adjustment_regimes():
    """One HRU, four days: all snow, all rain (by tmin), all rain (by tmax), mixed."""
    from gnnhydro.datasets.drb import prms_climate_adjustment

    f_to_c = lambda f: (np.asarray(f, dtype=np.float64) - 32.0) * 5.0 / 9.0  # noqa: E731
    tmax = f_to_c([[30.0, 40.0, 45.0, 36.0]])
    tmin = f_to_c([[20.0, 34.0, 20.0, 26.0]])
    prcp = np.array([[10.0, 10.0, 10.0, 10.0]])
    month = np.array([0, 0, 6, 6])
    adj = {
        "tmax_cbh_adj": np.full((12, 1), 0.0),
        "tmin_cbh_adj": np.full((12, 1), 0.0),
        "tmax_allsnow": np.full((12, 1), 32.0),
        "tmax_allrain_offset": np.full((12, 1), 8.0),  # all rain at tmax >= 40 °F
        "rain_cbh_adj": np.full((12, 1), 0.8),
        "snow_cbh_adj": np.full((12, 1), 1.1),
        "adjmix_rain": np.full((12, 1), 1.0),
    }
    adj["tmax_cbh_adj"][6] = 1.8  # +1 °C in July
    p, tx, tn = prms_climate_adjustment(prcp, tmax, tmin, month, adj)
    # snow (30 <= 32) x1.1; rain (tmin 34 > 32) x0.8; rain (tmax 45+1.8 >= 40) x0.8;
    # mixed (tmax 36+1.8 °F: rain fraction (37.8-32)/(37.8-26) < 1) -> snow factor x1.1
    np.testing.assert_allclose(p, [[11.0, 8.0, 8.0, 11.0]])
    np.testing.assert_allclose(tx - tmax, [[0.0, 0.0, 1.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(tn, tmin)


def test_prms_adjusted_forcing_on_single_hru_reach(drb, drb_dir, tmp_path):
    """August is all rain in the DRB: the adjusted precipitation of a one-HRU reach is the raw
    precipitation times that HRU's August rain_cbh_adj."""
    from gnnhydro.datasets import DelawareRiverBasin

    adjusted = DelawareRiverBasin(tmp_path, source_dir=drb_dir, climate_adjustment="prms")[0]
    raw = drb[0]
    (hru_segment,) = _nc(drb_dir / "parameters_PRMSChannel.nc", "hru_segment")
    (hru_nhm,) = _nc(drb_dir / "parameters_dis_hru.nc", "nhm_id")
    rain_adj, atm_ids = _nc(drb_dir / "parameters_PRMSAtmosphere.nc", "rain_cbh_adj", "nhm_id")
    counts = np.bincount(hru_segment, minlength=457)
    seg = int(np.flatnonzero(counts[1:] == 1)[0]) + 1
    hru = int(np.flatnonzero(hru_segment == seg)[0])
    factor = rain_adj[7, int(np.flatnonzero(atm_ids == hru_nhm[hru])[0])]
    august = np.asarray(raw.time).astype("datetime64[M]").astype(int) % 12 == 7
    np.testing.assert_allclose(
        adjusted.forcing[seg - 1, august, 0].numpy(),
        raw.forcing[seg - 1, august, 0].numpy() * factor,
        rtol=1e-5,
        atol=1e-5,
    )
    assert factor < 0.9  # the NHM removes rain in late summer: the test is not vacuous
    with pytest.raises(ValueError, match="climate_adjustment"):
        DelawareRiverBasin(tmp_path / "x", source_dir=drb_dir, climate_adjustment="nhm")
