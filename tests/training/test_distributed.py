"""Data-parallel training with ``trainer.sampler=gauge_basins``: every rank forms the batches of
one process and takes its share of each (balanced by nodes, a stand-in when it has none), and a
2-process gloo run gives the parameters and training losses of one process — for gauge basins
(with stand-ins) and for windows."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnhydro.config import compose
from gnnhydro.datasets.basins import NodeBudgetBatches, RankShares, share_out
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.training.experiment import Experiment
from gnnhydro.training.trainer import Trainer, _check_batch_size

COMMON = [
    "dataset.periods.train=[2000-01-01,2000-12-31]",
    "dataset.periods.validation=null",
    "dataset.periods.test=[2001-01-01,2001-12-31]",
    "dataset.warmup_days=30",
    "trainer.window_days=60",
    "trainer.epochs=2",
    "trainer.progress_bar=false",
    "model.runoff.nmul=2",
    "parameterizer.hidden_channels=8",
    "parameterizer.num_layers=2",
    "parameterizer.dropout=0.0",  # dropout masks depend on the batch a node is in
    "dataset.holdout.fraction=0.25",
]
# 5 training basins of 23, 9, 4, 3 and 5 nodes (with halo): the 23-node one is above the budget
# and trained alone, so the second rank runs a stand-in in that step
CASES = {
    "gauge_basins": [
        "trainer.sampler=gauge_basins",
        "trainer.max_nodes_per_batch=20",
        "trainer.batch_size=4",
        "trainer.loss={nse: 1.0, kge: 0.5}",
        "model.ensemble=2",
        "trainer.optimizer=sgd",  # unlike Adam, sensitive to the scale of the gradient
        "trainer.lr=0.01",
        "trainer.clip_grad_norm=null",
    ],
    "windows": ["trainer.batch_size=4", "trainer.steps_per_epoch=2"],
}


def _graph():
    return generate_synthetic_basin(seed=6, num_nodes=60, years=2, num_gauges=8)


def _exp(graph, run_dir, *extra) -> Experiment:
    return Experiment(compose([*COMMON, *extra]), Path(run_dir), graph=graph)


# ---------------------------------------------------------------------------- shares
def test_share_out_balances_nodes_and_keeps_every_sample_once():
    sizes = [23, 9, 4, 3, 5, 7, 1]
    shares = share_out([0, 1, 2, 3, 4, 5, 6], sizes, 2)
    assert sorted(shares[0] + shares[1]) == list(range(7))
    assert shares == [[0, 3], [1, 2, 4, 5, 6]]  # 26 nodes each
    assert share_out([1, 2, 3], sizes, 3) == [[1], [2], [3]]
    assert share_out([3], sizes, 2) == [[3], []]


def test_rank_shares_give_every_rank_the_same_steps_and_the_batch_once():
    sizes = [23, 9, 4, 3, 5, 7, 1, 2]
    batches = NodeBudgetBatches(sizes, 20, max_samples=4)
    assert list(batches) == [[0], [1, 2, 3], [4, 5, 6, 7]]
    ranks = [RankShares(batches, sizes, r, 2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(batches)
    for step, batch in enumerate(batches):
        real = [i for r in ranks for i, stand_in in list(r)[step] if not stand_in]
        assert sorted(real) == batch
    # the oversized basin alone: rank 1 runs the batch's smallest sample, out of the loss
    assert list(ranks[0])[0] == [(0, False)] and list(ranks[1])[0] == [(0, True)]
    assert ranks[0].stand_ins() == 0 and ranks[1].stand_ins() == 1
    with pytest.raises(ValueError, match="rank"):
        RankShares(batches, sizes, 2, 2)


def test_ranks_share_out_the_batches_of_one_process(tmp_path):
    """Same samples, same global batches on every rank; the shares partition each batch."""
    graph = _graph()
    exp = _exp(graph, tmp_path, *CASES["gauge_basins"])
    model = exp.build_model()
    dataset, batches = Trainer(exp, model)._gauge_basin_samples()
    ranks = [Trainer(exp, model, rank=r, world=2)._gauge_basin_samples() for r in (0, 1)]
    for shares, sampler in ranks:
        assert shares.samples == dataset.samples
        assert len(sampler) == len(batches)
    for step, batch in enumerate(batches):
        real = [i for _, s in ranks for i, stand_in in list(s)[step] if not stand_in]
        assert sorted(real) == batch
    item = ranks[1][0][(0, True)]
    assert item.stand_in is True and item.num_nodes == dataset[0].num_nodes


def test_batch_size_against_the_processes():
    windows = compose(["trainer.batch_size=3"]).trainer
    with pytest.raises(ValueError, match="not a multiple"):
        _check_batch_size(windows, 2)
    basins = compose(["trainer.batch_size=3", "trainer.sampler=gauge_basins"]).trainer
    _check_batch_size(basins, 2)  # shared out by nodes: no multiple needed
    with pytest.raises(ValueError, match="below the 4 processes"):
        _check_batch_size(basins, 4)


# ---------------------------------------------------------------------------- 2 processes
def _fit(graph, run_dir: Path, extra: list[str], rank: int = 0, world: int = 1) -> dict:
    """Train with ``extra``; the final weights, the losses of the steps and the stand-ins."""
    torch.manual_seed(0)
    exp = _exp(graph, run_dir, *extra)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    trainer = Trainer(exp, exp.build_model(), rank=rank, world=world)
    losses: list[float] = []
    stand_ins: list[int] = []
    step, loader = trainer._train_step, trainer._get_data_loader

    def recording_step(batch):
        losses.append(step(batch))
        return losses[-1]

    def recording_loader():
        out = loader()
        stand_ins.append(getattr(out.batch_sampler, "stand_ins", lambda: 0)())
        return out

    trainer._train_step, trainer._get_data_loader = recording_step, recording_loader
    trainer.fit()
    return {
        "model": {k: v.detach().clone() for k, v in trainer.module.state_dict().items()},
        "losses": losses,
        "stand_ins": sum(stand_ins),
    }


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from gnnhydro.training.trainer import distributed_context

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    assert distributed_context() == (rank, world)
    graph = _graph()
    for name, extra in CASES.items():
        result = _fit(graph, Path(out_dir) / f"{name}_{rank}", extra, rank, world)
        torch.save(result, Path(out_dir) / f"{name}_{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_like_one(two_processes, tmp_path, case):
    """2 gloo processes, each with its share of every step, end with the weights of one process
    with the whole batch, and log the global batch's loss (the same on both ranks)."""
    torch.set_num_threads(1)
    single = _fit(_graph(), tmp_path, CASES[case])
    ranks = [torch.load(two_processes / f"{case}_{r}.pt", weights_only=False) for r in (0, 1)]
    for rank in ranks:
        assert len(rank["losses"]) == len(single["losses"]) > 2
        if case == "gauge_basins":  # windows: each rank logs the loss of its own windows
            np.testing.assert_allclose(rank["losses"], single["losses"], rtol=1e-5)
        assert rank["model"].keys() == single["model"].keys()
        for key, value in single["model"].items():
            torch.testing.assert_close(rank["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    if case == "gauge_basins":  # the oversized basin's steps left rank 1 with a stand-in
        assert ranks[0]["stand_ins"] == 0
        assert 1 <= ranks[1]["stand_ins"] < len(single["losses"])  # and others shared a batch
