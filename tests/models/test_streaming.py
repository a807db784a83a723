"""Streamed prediction: the model run chunk by chunk (time × nodes, states carried) equals the
in-memory forward; the zarr discharge store has the netCDF layout; ``predict`` streamed from a
lazy zarr dataset equals ``predict`` in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from omegaconf import OmegaConf

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.export import DischargeZarrWriter, export_discharge
from gnnhydro.models.streaming import stream_discharge
from gnnhydro.training.experiment import Experiment
from tests.layout import write_generic

PERIODS = [
    "dataset.periods.train=[2000-01-01,2000-12-31]",
    "dataset.periods.validation=null",
    "dataset.periods.test=[2001-01-01,2001-12-31]",
]


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=4, num_nodes=40, years=2)


def _model(graph, tmp_path, *overrides):
    runoff = [] if "model=routing_only" in overrides else ["model.runoff.nmul=2"]
    cfg = compose([*PERIODS, *overrides, *runoff, "parameterizer.hidden_channels=8"])
    exp = Experiment(cfg, tmp_path, graph=graph)
    return cfg, exp.build_model().eval()


def _streamed(model, graph, reads=None, **chunks):
    """The streamed discharge ``[N, T]`` (None on ranks that route nothing) and parameters;
    ``reads`` collects the nodes read."""
    pieces: dict[int, torch.Tensor] = {}

    def forcing(t0, t1, nodes):
        if reads is not None:
            reads.append(nodes)
        return graph.forcing[nodes, t0:t1]

    params = stream_discharge(
        model,
        graph,
        forcing,
        graph.forcing_names,
        lambda t0, q: pieces.__setitem__(t0, q.clone()),
        num_steps=graph.forcing.shape[1],
        time=np.asarray(graph.time),
        **chunks,
    )
    q = torch.cat([pieces[k] for k in sorted(pieces)], dim=1) if pieces else None
    return q, params


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        # spin-up longer than a time chunk, δHBV2.0 options (groundwater exchange reads the
        # upstream area), a seasonal forcing correction and a two-member ensemble
        [
            "model=hbv2_muskingum",
            "model.spinup_days=400",
            "model.ensemble=2",
            "model.forcing_correction={precipitation:constant,pet:seasonal}",
        ],
        ["model=routing_only"],
    ],
    ids=["hbv", "spinup-ensemble-correction", "routing"],
)
def test_streamed_equals_in_memory(graph, tmp_path, overrides):
    g = graph
    if overrides == ["model=routing_only"]:  # lateral inflow is read like forcing
        g = graph.clone()
        g.forcing = g.lateral_inflow.unsqueeze(-1)
        g.forcing_names = ["lateral_inflow"]
    _, model = _model(g, tmp_path, *overrides)
    with torch.no_grad():
        reference = model(g)
    # chunks that do not divide the record or the network
    q, params = _streamed(model, g, time_chunk=100, node_chunk=7)
    scale = reference["discharge"].abs().max()
    assert (q - reference["discharge"]).abs().max() <= 1e-5 * scale
    for name, value in reference["params"].items():
        torch.testing.assert_close(params[name], value)


def test_streamed_refuses_models_it_cannot_chunk(graph, tmp_path):
    _, model = _model(graph, tmp_path, "model.runoff.dynamic=[beta]")
    with pytest.raises(ValueError, match="vary in time"):
        _streamed(model, graph)


def test_zarr_store_has_the_netcdf_layout_and_marks_completion(graph, tmp_path):
    q = torch.rand(graph.num_nodes, len(graph.time)) * 10
    nc = export_discharge(graph, q, graph.time, tmp_path / "q.nc", warmup_steps=30)
    writer = DischargeZarrWriter(
        tmp_path / "q.zarr", graph, graph.time, time_chunk=200, warmup_steps=30, attrs={"a": 1}
    )
    for t0 in range(0, q.shape[1], 200):
        writer.write(t0, q[:, t0 : t0 + 200])
    with xr.open_zarr(tmp_path / "q.zarr") as partial:
        assert partial.attrs["complete"] == 0
    writer.close()
    with xr.open_dataset(nc) as a, xr.open_zarr(tmp_path / "q.zarr") as b:
        assert b.attrs["complete"] == 1 and b.attrs["gnnhydro_a"] == 1
        np.testing.assert_array_equal(a["discharge"].values, b["discharge"].values)
        for name in ("time", "station_id", "lon", "lat", "warmup"):
            np.testing.assert_array_equal(a[name].values, b[name].values)
        assert a["discharge"].attrs == b["discharge"].attrs
        assert b["time"].attrs["standard_name"] == "time"
    converted = writer.to_netcdf(tmp_path / "q2.nc")
    with xr.open_dataset(converted) as c, xr.open_dataset(nc) as a:
        np.testing.assert_array_equal(a["discharge"].values, c["discharge"].values)
        np.testing.assert_array_equal(a["time"].values, c["time"].values)
    with pytest.raises(ValueError, match="does not fit"):
        writer.write(0, q[:5, :10])


def test_predict_streamed_from_zarr_equals_predict_in_memory(graph, tmp_path):
    from gnnhydro.training.checkpoint import atomic_save
    from gnnhydro.training.model import ModelInputs
    from gnnhydro.training.run import predict

    cfg, model = _model(graph, tmp_path / "exp")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    ModelInputs.from_graph(graph).save(run / "model_inputs.json")
    atomic_save({"model": model.state_dict(), "epoch": 1}, run / "checkpoints" / "best.pt")
    write_generic(graph, tmp_path / "basin")
    data = compose(["dataset=generic", f"dataset.root={tmp_path / 'basin'}"]).dataset
    lazy = compose(["dataset=generic", f"dataset.root={tmp_path / 'basin'}", "dataset.lazy=true"])
    memory = predict(run, data, tmp_path / "memory", progress=False)
    streamed = predict(
        run, lazy.dataset, tmp_path / "streamed", time_chunk=120, node_chunk=9, progress=False
    )
    as_nc = predict(
        run,
        lazy.dataset,
        tmp_path / "as_nc",
        discharge_format="netcdf",
        time_chunk=365,
        progress=False,
    )
    with (
        xr.open_dataset(memory / "discharge.nc") as a,
        xr.open_zarr(streamed / "discharge.zarr") as b,
        xr.open_dataset(as_nc / "discharge.nc") as c,
    ):
        scale = float(np.abs(a["discharge"].values).max())
        assert scale > 1.0
        for other in (b, c):
            error = np.abs(other["discharge"].values - a["discharge"].values).max()
            assert error <= 1e-5 * scale
            np.testing.assert_array_equal(a["station_id"].values, other["station_id"].values)
    import geopandas as gpd

    pa, pb = (gpd.read_file(p / "parameters.gpkg") for p in (memory, streamed))
    np.testing.assert_allclose(pa["fc"].to_numpy(), pb["fc"].to_numpy(), rtol=1e-6)
    assert not (tmp_path / "streamed.partial").exists()
    with pytest.raises(ValueError, match="discharge_format=zarr"):
        predict(run, data, tmp_path / "bad", discharge_format="zarr", progress=False)


def test_checkpointed_runoff_gives_the_same_gradients(graph, tmp_path):
    """Runoff in node chunks under gradient checkpointing (bounded adjoint memory for a basin
    above the batch budget): the same loss and gradients as the whole batch at once."""
    _, model = _model(graph, tmp_path, "model=hbv2_muskingum")
    _, chunked = _model(graph, tmp_path, "model=hbv2_muskingum", "model.runoff.checkpoint_nodes=7")
    chunked.load_state_dict(model.state_dict())
    assert chunked.checkpoint_nodes == 7 and model.checkpoint_nodes is None
    grads = []
    for m in (model, chunked):
        m.train()
        m.zero_grad()
        torch.manual_seed(0)  # the same dropout draws
        q = m(graph)["discharge"]
        (q[graph.gauge_index].log1p().mean()).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-7)


def _distributed_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    from gnnhydro.training.trainer import distributed_context

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    assert distributed_context() == (rank, world)
    graph = generate_synthetic_basin(seed=4, num_nodes=40, years=2)
    torch.manual_seed(0)
    _, model = _model(graph, Path(out_dir) / f"exp{rank}")
    reads: list[torch.Tensor] = []
    q, _ = _streamed(model, graph, reads, time_chunk=250, node_chunk=6, rank=rank, world=world)
    torch.save({"q": q, "reads": reads, "state": model.state_dict()}, Path(out_dir) / f"{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_the_runoff_and_predict_like_one(tmp_path):
    """Under torchrun the network is sharded by the stage plan: each rank runs runoff and routing
    of its own reaches (reading only their forcing), boundary outflows pass from rank to rank,
    rank 0 gathers: the discharge of one process."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[1]["q"] is None  # rank 1 computes, rank 0 writes
    graph = generate_synthetic_basin(seed=4, num_nodes=40, years=2)
    _, model = _model(graph, tmp_path / "single")
    model.load_state_dict(ranks[0]["state"])
    with torch.no_grad():
        reference = model(graph)["discharge"]
    scale = reference.abs().max()
    assert (ranks[0]["q"] - reference).abs().max() <= 1e-5 * scale
    # each rank read only its own shard of the network, and the shards cover it
    shards = [set(torch.cat(r["reads"]).tolist()) for r in ranks]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(graph.num_nodes))
    # the shards are joined by river edges, so boundary outflows really crossed between ranks
    side = torch.tensor([0 if i in shards[0] else 1 for i in range(graph.num_nodes)])
    src, dst = graph.edge_index
    assert bool((side[src] != side[dst]).any())
