"""Gauge-basin samples: basins and halos against networkx, exactness of a sample against the
whole-graph model, node-budget batches, and a training epoch with the sampler."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from gnnhydro.config import compose
from gnnhydro.datasets.basins import GaugeBasins, GaugeBasinSamples, NodeBudgetBatches
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.datasets.windows import slice_time
from gnnhydro.training.experiment import Experiment
from gnnhydro.training.trainer import Trainer


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=6, num_nodes=60, years=2, num_gauges=8)


def _nx(graph) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.num_nodes))
    g.add_edges_from(graph.edge_index.t().tolist())
    return g


def test_basins_and_halos_equal_networkx(graph):
    gauges = graph.gauge_index[:5]
    basins = GaugeBasins(graph, gauges, halo_hops=2)
    g = _nx(graph)
    undirected = g.to_undirected()
    for i, gauge in enumerate(gauges.tolist()):
        basin = nx.ancestors(g, gauge) | {gauge}
        near = set()
        for node in basin:
            near |= set(nx.single_source_shortest_path_length(undirected, node, cutoff=2))
        nodes = basins.nodes(i).tolist()
        assert set(nodes[: basins.basin_size(i)]) == basin
        assert set(nodes[basins.basin_size(i) :]) == near - basin
        assert len(nodes) == len(set(nodes))


def _exp(graph, *extra):
    cfg = compose(
        [
            "dataset.periods.train=[2000-01-01,2000-12-31]",
            "dataset.periods.validation=null",
            "dataset.periods.test=[2001-01-01,2001-12-31]",
            "dataset.warmup_days=30",
            "trainer.window_days=60",
            "model.runoff.nmul=2",
            "parameterizer.hidden_channels=8",
            "parameterizer.num_layers=2",
            "dataset.holdout.fraction=0.25",
            *extra,
        ]
    )
    return Experiment(cfg, "/tmp/unused", graph=graph)


@pytest.mark.parametrize("parameterizer", ["sage", "gatv2", "mlp"])
def test_a_basin_sample_gives_the_whole_graph_discharge_and_parameters(graph, parameterizer):
    """With a halo of as many hops as message-passing rounds, the parameters and the routed
    discharge in the basin equal those of the whole network."""
    exp = _exp(graph, f"parameterizer={parameterizer}")
    model = exp.build_model().eval()
    trainer = Trainer(exp, model)
    basins = GaugeBasins(graph, exp.split.train_index, halo_hops=trainer._halo_hops())
    assert trainer._halo_hops() == (0 if parameterizer == "mlp" else 2)
    window = (100, 190, 30)
    samples = GaugeBasinSamples(graph, basins, [(i, *window) for i in range(len(basins))])
    assert max(basins.basin_size(i) for i in range(len(basins))) > 5  # nested, routed basins
    if parameterizer != "mlp":
        assert all(basins.size(i) > basins.basin_size(i) for i in range(len(basins)))
    full = slice_time(graph, 100, 190)
    with torch.no_grad():
        whole = model(full)
        for i in range(len(basins)):
            out = model(samples[i])
            basin = basins.nodes(i)[: basins.basin_size(i)]
            torch.testing.assert_close(out["discharge"], whole["discharge"][basin])
            for name, value in out["params"].items():
                torch.testing.assert_close(value, whole["params"][name][basin], msg=name)
            # the loss sees the training gauges inside the basin, the halo's never
            train_in_basin = set(basin.tolist()) & set(exp.split.train_index.tolist())
            assert int(out["graph"].train_gauge_mask.sum()) == len(train_in_basin)


def test_node_budget_batches():
    batches = NodeBudgetBatches([3, 4, 2, 9, 1, 1], max_nodes=7, max_samples=3)
    assert list(batches) == [[0, 1], [2], [3], [4, 5]]
    assert batches.oversized() == [3]  # above the budget: alone, never dropped
    assert list(NodeBudgetBatches([1] * 5, None, max_samples=2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="max_nodes_per_batch"):
        NodeBudgetBatches([1], max_nodes=0)


def test_an_epoch_visits_every_training_gauge_once(graph, tmp_path):
    exp = _exp(
        graph,
        "trainer.sampler=gauge_basins",
        "trainer.max_nodes_per_batch=40",
        "trainer.batch_size=4",
    )
    exp.run_dir = tmp_path
    (tmp_path / "checkpoints").mkdir()
    trainer = Trainer(exp, exp.build_model())
    loader = trainer._get_data_loader()
    seen = sorted(b for b, *_ in loader.dataset.samples)
    assert seen == list(range(exp.split.train_index.numel()))
    for batch in loader:
        alone = batch.num_graphs == 1
        assert alone or batch.num_nodes <= 40
        assert batch.physics_mask.sum() < batch.num_nodes or trainer._halo_hops() == 0 or alone
    before = [p.detach().clone() for p in trainer.module.parameters()]
    trainer.tcfg.epochs = 1
    trainer.fit()
    changed = [not torch.equal(a, p) for a, p in zip(before, trainer.module.parameters())]
    assert any(changed) and np.isfinite(trainer.state["best"])


def test_lazy_basin_samples_read_only_their_nodes_and_equal_the_eager_ones(tmp_path):
    from gnnhydro.datasets import GenericRiverDataset
    from tests.test_first_use import write_catchments

    data = write_catchments(tmp_path / "mine", isolated=False, n=8, years=2)
    eager = GenericRiverDataset(tmp_path / "eager", source_dir=data / "raw")[0]
    lazy_ds = GenericRiverDataset(tmp_path / "lazy", lazy=True, source_dir=data / "raw")
    lazy = lazy_ds[0]
    assert getattr(lazy, "forcing", None) is None
    gauges = torch.tensor([3, 7])
    basins = GaugeBasins(eager, gauges, halo_hops=1)
    samples = [(0, 40, 140, 20), (1, 200, 300, 20)]
    reads = []
    reader = lazy_ds.reader
    original = reader._read

    def counting(name, start, stop, nodes=None):
        reads.append(None if nodes is None else len(nodes))
        return original(name, start, stop, nodes)

    reader._read = counting
    a = GaugeBasinSamples(eager, basins, samples)
    b = GaugeBasinSamples(lazy, basins, samples, reader=reader)
    for i in range(2):
        torch.testing.assert_close(b[i].forcing, a[i].forcing)
        torch.testing.assert_close(b[i].q_obs, a[i].q_obs, equal_nan=True)
        assert torch.equal(b[i].physics_mask, a[i].physics_mask)
    assert reads and all(r is not None and r <= 8 for r in reads)
    assert min(reads) < 8  # the first basin is a part of the network


@pytest.mark.parametrize("extra", [[], ["model.ensemble=2", "trainer.loss={nse: 1.0, kge: 0.5}"]])
def test_validation_over_basins_equals_the_whole_network(graph, extra):
    """Node-budget batches of basins give the validation loss of the whole network."""
    common = ["dataset.periods.validation=[2001-01-01,2001-06-30]", *extra]
    whole = _exp(graph, *common)
    model = whole.build_model()
    expected = Trainer(whole, model)._validate()
    basins = _exp(graph, *common, "trainer.sampler=gauge_basins", "trainer.max_nodes_per_batch=30")
    trainer = Trainer(basins, model)
    sizes = [trainer._gauge_basins().size(i) for i in range(len(trainer._gauge_basins()))]
    assert sum(sizes) > 30  # several batches
    assert trainer._validate() == pytest.approx(expected, rel=1e-5)
