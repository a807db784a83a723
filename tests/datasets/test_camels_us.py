"""CamelsUS against the original CAMELS text files: the shipped subset in ../shared/data and a
tiny hand-written CAMELS folder (two basins with different record spans)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from gnnhydro.datasets import CamelsUS

CFS = 0.3048**3
SUBSET_IDS = ["01022500", "01547700", "02064000", "03015500"]


def read_flow_text(path) -> pd.Series:
    """A CAMELS ``*_streamflow_qc.txt`` read by hand: m³/s by date, -999 → NaN."""
    days, values = [], []
    for line in path.read_text().splitlines():
        _, y, m, d, q, *_ = line.split()
        days.append(pd.Timestamp(int(y), int(m), int(d)))
        values.append(np.nan if float(q) < 0 else float(q) * CFS)
    return pd.Series(values, index=pd.DatetimeIndex(days))


@pytest.fixture(scope="module")
def camels(camels_dir, tmp_path_factory):
    return CamelsUS(tmp_path_factory.mktemp("camels"), source_dir=camels_dir)


def test_basins_are_single_node_graphs(camels):
    assert len(camels) == 4
    ids = [g.node_id[0] for g in camels]
    assert ids == SUBSET_IDS
    for g in camels:
        assert g.num_nodes == 1 and g.edge_index.shape == (2, 0)
        assert g.gauge_index.tolist() == [0] and g.gauge_id == g.node_id
        assert g.forcing.shape == (1, len(g.time), 3) and g.q_obs.shape == (1, len(g.time))
        assert g.forcing_names == ["precipitation", "temperature", "pet"]
        assert "area_gages2" in g.x_names and "q_mean" not in g.x_names  # no target signatures
        assert torch.isfinite(g.x).all() and torch.isfinite(g.forcing).all()


def test_one_time_axis_equal_to_the_union_of_records(camels, camels_dir):
    """01022500's forcing runs a year longer (to 2003) than the others': every item has the same
    axis, the span all forcing covers, which is the union of the streamflow records; q_obs equals
    the file values on it."""
    union = pd.DatetimeIndex([])
    for b in SUBSET_IDS:
        union = union.union(
            read_flow_text(camels_dir / f"usgs_streamflow/{b}_streamflow_qc.txt").index
        )
    axis = union.to_numpy().astype("datetime64[ns]")
    for g in camels:
        np.testing.assert_array_equal(g.time, axis)
    assert str(axis[0])[:10] == "2000-01-01" and str(axis[-1])[:10] == "2002-12-31"
    for b, g in zip(SUBSET_IDS, camels, strict=True):
        flow = read_flow_text(camels_dir / f"usgs_streamflow/{b}_streamflow_qc.txt")
        expected = flow.reindex(pd.DatetimeIndex(axis)).to_numpy()
        np.testing.assert_allclose(g.q_obs[0].double().numpy(), expected, rtol=1e-6)
    # the items batch into one disjoint graph (equal T)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([camels[i] for i in range(len(camels))])
    assert batch.forcing.shape == (4, len(axis), 3) and batch.q_obs.shape == (4, len(axis))


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
    last = lines[4 + 1095].split()
    assert last[:3] == ["2002", "12", "31"]
    assert float(g.forcing[0, -1, 0]) == pytest.approx(float(last[5]))
    from gnnhydro.units import hargreaves_pet

    pet = hargreaves_pet(np.array(float(first[9])), np.array(float(first[8])), lat, np.array(1.0))
    assert float(g.forcing[0, 0, 2]) == pytest.approx(float(pet), rel=1e-5)
    flow = (camels_dir / "usgs_streamflow/01022500_streamflow_qc.txt").read_text().splitlines()
    assert flow[0].split()[4] == "255.00"
    assert float(g.q_obs[0, 0]) == pytest.approx(255.0 * CFS, rel=1e-6)
    assert len(g.time) == 1096 and not torch.isnan(g.q_obs[0]).any()
    assert float(g.area_km2[0]) == pytest.approx(573.6)


def test_basins_and_start_end_restrict(camels, camels_dir, tmp_path):
    ds = CamelsUS(
        tmp_path, source_dir=camels_dir, basins=["01547700"], start="2001-02-01", end="2001-03-31"
    )
    assert len(ds) == 1 and ds[0].node_id == ["01547700"]
    g = ds[0]
    axis = pd.date_range("2001-02-01", "2001-03-31", freq="D")
    np.testing.assert_array_equal(g.time, axis.to_numpy().astype("datetime64[ns]"))
    full = camels[1]
    i0 = int(np.searchsorted(full.time, np.datetime64("2001-02-01")))
    assert torch.equal(g.forcing[0], full.forcing[0, i0 : i0 + len(axis)])
    flow = read_flow_text(camels_dir / "usgs_streamflow/01547700_streamflow_qc.txt")
    np.testing.assert_allclose(g.q_obs[0].double().numpy(), flow.loc[axis].to_numpy(), rtol=1e-6)


def test_one_basin_beyond_the_others_record(camels_dir, tmp_path):
    """01022500 alone may use its forcing to 2003; its q_obs is NaN after its record ends."""
    ds = CamelsUS(tmp_path, source_dir=camels_dir, basins=["01022500"], end="2003-06-30")
    g = ds[0]
    assert str(g.time[-1])[:10] == "2003-06-30" and torch.isfinite(g.forcing).all()
    i = int(np.searchsorted(g.time, np.datetime64("2003-01-01")))
    assert torch.isnan(g.q_obs[0, i:]).all() and not torch.isnan(g.q_obs[0, :i]).any()


def test_period_not_covered_by_every_basin_names_them(camels_dir, tmp_path):
    with pytest.raises(ValueError) as err:
        CamelsUS(tmp_path, source_dir=camels_dir, end="2003-06-30")
    msg = str(err.value)
    for b in ("01547700", "02064000", "03015500"):
        assert f"{b} (2000-01-01..2002-12-31)" in msg
    assert "01022500" not in msg and "2000-01-01..2002-12-31" in msg


def test_missing_discharge_and_subset(camels_dir, tmp_path):
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


# ------------------------------------------------------------- a hand-written CAMELS folder
HEADER = "Year Mnth Day Hr dayl(s) prcp(mm/day) srad(W/m2) swe(mm) tmax(C) tmin(C) vp(Pa)"


def write_camels(raw, spans: dict[str, tuple[tuple[str, str], tuple[str, str]]]) -> None:
    """Basins ``{id: ((forcing start, end), (streamflow start, end))}`` in the CAMELS layout;
    precipitation on day k of the forcing = k / 10 mm, discharge on day k of the record = k cfs."""
    attrs = raw / "camels_attributes_v2.0"
    attrs.mkdir(parents=True)
    rows = ["gauge_id;gauge_lat;gauge_lon;elev_mean;slope_mean;area_gages2"]
    for k, b in enumerate(spans):
        rows.append(f"{b};{44 + k};-70.0;300.0;10.0;{100.0 * (k + 1)}")
    (attrs / "camels_topo.txt").write_text("\n".join(rows) + "\n")
    (raw / "basin_mean_forcing/daymet").mkdir(parents=True)
    (raw / "usgs_streamflow").mkdir(parents=True)
    for k, (b, ((f0, f1), (q0, q1))) in enumerate(spans.items()):
        lines = [f"  {44 + k}.00", " 300.00", f" {100e6 * (k + 1):.0f}", HEADER]
        for i, d in enumerate(pd.date_range(f0, f1, freq="D")):
            lines.append(
                f"{d.year} {d.month:02d} {d.day:02d} 12\t36000.00\t{i / 10:.2f}\t200.00\t0.00"
                f"\t{5.0 + i % 3:.2f}\t{-2.0:.2f}\t500.00"
            )
        (raw / f"basin_mean_forcing/daymet/{b}_lump_cida_forcing_leap.txt").write_text(
            "\n".join(lines) + "\n"
        )
        flow = [
            f"{b} {d.year} {d.month:02d} {d.day:02d} {float(i + 1):8.2f} A"
            for i, d in enumerate(pd.date_range(q0, q1, freq="D"))
        ]
        (raw / f"usgs_streamflow/{b}_streamflow_qc.txt").write_text("\n".join(flow) + "\n")


SPANS = {
    "00000001": (("2000-01-01", "2000-01-20"), ("2000-01-05", "2000-01-25")),
    "00000002": (("1999-12-25", "2000-01-15"), ("2000-01-02", "2000-01-10")),
}


def test_hand_written_basins_with_different_spans(tmp_path):
    write_camels(tmp_path / "raw", SPANS)
    with pytest.warns(UserWarning, match=r"00000001: 10 days") as record:
        ds = CamelsUS(tmp_path, attribute_tables=["topo"])
    assert "00000002" not in str(record[0].message).split("not used")[1]
    assert [g.node_id[0] for g in ds] == ["00000001", "00000002"]
    axis = pd.date_range("2000-01-01", "2000-01-15", freq="D")  # every basin's forcing covers it
    for g in ds:
        np.testing.assert_array_equal(g.time, axis.to_numpy().astype("datetime64[ns]"))
        assert torch.isfinite(g.forcing).all()
    a, b = ds[0], ds[1]
    # precipitation = k / 10 on day k of each basin's own forcing file
    np.testing.assert_allclose(a.forcing[0, :, 0].numpy(), np.arange(15) / 10, atol=1e-6)
    np.testing.assert_allclose(b.forcing[0, :, 0].numpy(), (np.arange(15) + 7) / 10, atol=1e-6)
    # discharge: NaN outside each basin's record, the file values inside
    qa = np.full(15, np.nan)
    qa[4:] = np.arange(1, 12) * CFS  # record from 2000-01-05
    qb = np.full(15, np.nan)
    qb[1:10] = np.arange(1, 10) * CFS  # record 2000-01-02..2000-01-10
    np.testing.assert_allclose(a.q_obs[0].double().numpy(), qa, rtol=1e-6)
    np.testing.assert_allclose(b.q_obs[0].double().numpy(), qb, rtol=1e-6)
    assert float(b.area_km2[0]) == pytest.approx(200.0)


def test_hand_written_start_end(tmp_path):
    write_camels(tmp_path / "raw", SPANS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit period: nothing to warn about
        ds = CamelsUS(tmp_path, attribute_tables=["topo"], start="2000-01-03", end="2000-01-12")
    for g in ds:
        assert len(g.time) == 10 and str(g.time[0])[:10] == "2000-01-03"
    only = CamelsUS(tmp_path, attribute_tables=["topo"], basins=["00000001"], end="2000-01-20")
    assert len(only) == 1 and len(only[0].time) == 20
    with pytest.raises(ValueError, match=r"00000002 \(1999-12-25\.\.2000-01-15\)"):
        CamelsUS(tmp_path, attribute_tables=["topo"], end="2000-01-20")


def test_unquoted_yaml_ids_get_a_hint(tmp_path):
    write_camels(tmp_path / "raw", SPANS)
    with pytest.raises(ValueError, match="octal"):
        CamelsUS(tmp_path, attribute_tables=["topo"], basins=[271680])


def test_hand_written_disjoint_records(tmp_path):
    spans = {
        "00000001": (("2000-01-01", "2000-01-10"), ("2000-01-01", "2000-01-10")),
        "00000002": (("2000-02-01", "2000-02-10"), ("2000-02-01", "2000-02-10")),
    }
    write_camels(tmp_path / "raw", spans)
    with pytest.raises(ValueError, match=r"do not overlap.*00000002 \(2000-02-01\.\.2000-02-10\)"):
        CamelsUS(tmp_path, attribute_tables=["topo"])
