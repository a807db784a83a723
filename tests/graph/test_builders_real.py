"""Build-and-validate tests on the real networks in ../shared/data."""

import time

import numpy as np
import torch
import xarray as xr

from gnnhydro import RiverGraph


def test_nwm_lower_colorado_routelink(shared_data):
    path = shared_data / "lower_colorado_tx" / "domain" / "RouteLink.nc"
    start = time.perf_counter()
    g = RiverGraph.from_routelink(path)
    elapsed = time.perf_counter() - start
    assert g.num_nodes == 11_248
    assert g.outlets.numel() == 1
    assert g.num_levels == 649
    assert elapsed < 2.0, f"building the 11k network took {elapsed:.2f} s"
    ds = xr.open_dataset(path)
    link, to = ds["link"].values, ds["to"].values
    k = 1234
    down = g.edge_index[1, g.edge_index[0] == k]
    assert g.node_id[int(down)] == int(to[k])
    assert g.node_id[k] == int(link[k])
    assert torch.allclose(g.length_m, torch.as_tensor(ds["Length"].values, dtype=torch.float32))
    assert g.crs == "EPSG:4326"


def test_nhm_delaware_segments(shared_data):
    path = shared_data / "drb_2yr" / "parameters_dis_seg.nc"
    g = RiverGraph.from_prms(path)
    assert g.num_nodes == 456
    assert g.outlets.numel() == 6
    assert g.num_levels == 72  # longest path: 72 segments
    ds = xr.open_dataset(path)
    tosegment = ds["tosegment"].values
    nhm = ds["nhm_seg"].values
    # 1-based tosegment, 0 = outlet
    for seg in [0, 100, 455]:
        down = g.edge_index[1, g.edge_index[0] == seg]
        if tosegment[seg] == 0:
            assert down.numel() == 0
        else:
            assert g.node_id[int(down)] == int(nhm[tosegment[seg] - 1])
    assert np.allclose(g.length_m.numpy(), ds["seg_length"].values, rtol=1e-6)
