"""The Trainer's hooks: optimizer and scheduler from names or hydra ``_target_`` configs, the
epoch's samples through PyG's DataLoader (equal to the disjoint union of the same windows),
shares of the windows under data parallelism, and an overridden loss hook."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.datasets.windows import WindowSamples
from gnnhydro.training.experiment import Experiment
from gnnhydro.training.trainer import Trainer, _masked_loss, _windows
from tests.training.reference import disjoint_union


@pytest.fixture(scope="module")
def graph():
    return generate_synthetic_basin(seed=4, num_nodes=20, years=2)


def _exp(graph, tmp_path, *extra):
    cfg = compose(
        [
            "dataset.periods.train=[2000-01-01,2000-12-31]",
            "dataset.periods.validation=null",
            "dataset.periods.test=[2001-01-01,2001-12-31]",
            "dataset.warmup_days=30",
            "trainer.window_days=60",
            "trainer.batch_size=4",
            "trainer.steps_per_epoch=3",
            "model.runoff.nmul=1",
            "parameterizer.hidden_channels=8",
            *extra,
        ]
    )
    return Experiment(cfg, tmp_path, graph=graph)


def test_optimizer_and_scheduler_from_names_and_targets(graph, tmp_path):
    exp = _exp(graph, tmp_path)
    trainer = Trainer(exp, exp.build_model())
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    exp = _exp(
        graph,
        tmp_path,
        "trainer.optimizer={_target_:torch.optim.RAdam,_partial_:true,betas:[0.8,0.99]}",
        "trainer.lr=0.003",
        "trainer.scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:0.5}",
    )
    trainer = Trainer(exp, exp.build_model())
    assert isinstance(trainer.optimizer, torch.optim.RAdam)
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.003) and tuple(group["betas"]) == (0.8, 0.99)
    trainer.scheduler.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0015)
    with pytest.raises(ValueError, match="trainer.optimizer must be one of"):
        Trainer(_exp(graph, tmp_path, "trainer.optimizer=adamm"), exp.build_model())
    with pytest.raises(ValueError, match="trainer.scheduler"):
        Trainer(_exp(graph, tmp_path, "trainer.scheduler=linear"), exp.build_model())


def test_data_loader_batches_equal_the_disjoint_union_of_the_windows(graph, tmp_path):
    exp = _exp(graph, tmp_path)
    trainer = Trainer(exp, exp.build_model())
    windows = _windows(exp, np.random.default_rng(int(exp.cfg.seed)), 4)
    batches = list(trainer._get_data_loader())
    assert len(batches) == 3  # steps_per_epoch
    expected, warm = disjoint_union(exp, windows)  # the first step's windows, by hand
    first = batches[0]
    assert int(first.warmup_steps.unique()) == warm == exp.warmup
    for key in ("forcing", "q_obs", "x", "edge_index", "train_gauge_mask"):
        torch.testing.assert_close(first[key], expected[key], msg=key, equal_nan=True)
    np.testing.assert_array_equal(np.asarray(first.time[0]), np.asarray(expected.time[0]))


def test_data_parallel_ranks_share_the_same_windows(graph, tmp_path):
    exp = _exp(graph, tmp_path)
    model = exp.build_model()
    one = Trainer(exp, model)._epoch_windows()
    ranks = [Trainer(exp, model, rank=r, world=2)._epoch_windows() for r in (0, 1)]
    for step in range(3):
        block = one[4 * step : 4 * step + 4]
        assert ranks[0][2 * step : 2 * step + 2] == block[0::2]
        assert ranks[1][2 * step : 2 * step + 2] == block[1::2]


def test_a_subclass_overrides_a_hook(graph, tmp_path):
    calls = []

    class CountingTrainer(Trainer):
        def _get_loss(self):
            def loss(simulation, observation, warmup_steps):
                calls.append(warmup_steps)
                diff = (simulation - observation)[..., warmup_steps:]
                return diff[torch.isfinite(diff)].abs().mean()

            return loss

    exp = _exp(graph, tmp_path, "trainer.epochs=1")
    (tmp_path / "checkpoints").mkdir()
    trainer = CountingTrainer(exp, exp.build_model())
    trainer.fit()
    assert calls == [exp.warmup] * 3 and trainer.state["epoch"] == 1
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_window_samples_reject_windows_outside_the_series(graph):
    with pytest.raises(ValueError, match="outside"):
        WindowSamples(graph, [(0, len(graph.time) + 1, 0)])
    with pytest.raises(ValueError, match="warmup"):
        WindowSamples(graph, [(0, 10, 10)])


def test_lazy_generic_dataset_trains_like_the_in_memory_one(tmp_path):
    """``dataset.lazy=true``: forcing and discharge are read per window from the files; the
    training log, metrics and parameter map equal those of the in-memory dataset."""
    import pandas as pd

    from gnnhydro.training.trainer import train
    from tests.test_first_use import write_catchments

    data = write_catchments(tmp_path / "mine", isolated=False, years=2)
    common = [
        "dataset=generic",
        "trainer.epochs=2",
        "trainer.steps_per_epoch=2",
        "trainer.batch_size=2",
        "trainer.window_days=100",
        "trainer.progress_bar=false",
        "dataset.warmup_days=30",
        "model.runoff.nmul=1",
        "parameterizer.hidden_channels=8",
        "export.plots=false",
    ]
    logs, metrics = [], []
    for lazy in (False, True):
        root = tmp_path / f"root_{lazy}"
        cfg = compose([*common, f"dataset.root={root}", f"dataset.source_dir={data / 'raw'}"])
        cfg.dataset.lazy = lazy
        run_dir = tmp_path / f"run_{lazy}"
        train(cfg, run_dir)
        logs.append(pd.read_csv(run_dir / "train_log.csv").drop(columns="seconds"))
        metrics.append(pd.read_csv(run_dir / "metrics.csv"))
    pd.testing.assert_frame_equal(logs[0], logs[1])
    pd.testing.assert_frame_equal(metrics[0], metrics[1])


def test_training_without_gradient_through_the_warmup(graph, tmp_path):
    """``trainer.warmup_gradient=false``: the step's weight gradient is that of the loss with the
    warm-up run detached (``detach_steps``); ``true`` (default) keeps the exact one."""
    grads = {}
    for flag in ("true", "false"):
        exp = _exp(
            graph,
            tmp_path / flag,
            f"trainer.warmup_gradient={flag}",
            "trainer.clip_grad_norm=null",
            "parameterizer.dropout=0.0",
        )
        torch.manual_seed(0)
        model = exp.build_model()
        trainer = Trainer(exp, model)
        batch = next(iter(trainer._get_data_loader()))
        trainer.optimizer.step = lambda: None  # keep the weights: compare the gradients
        trainer._train_step(batch)
        grads[flag] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        for detach in (0, exp.warmup):
            model.zero_grad()
            out = model(batch, detach_steps=detach)
            _masked_loss(trainer.loss_fn, out, batch, exp.warmup, "train_gauge_mask").backward()
            grads[flag, detach] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for flag, detach in (("true", 0), ("false", exp.warmup)):
        for a, b in zip(grads[flag], grads[flag, detach], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert not all(
        torch.allclose(a, b, rtol=1e-3) for a, b in zip(grads["true"], grads["false"], strict=True)
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_in_a_finaliser_still_stops_training(graph, tmp_path):
    """Python swallows a KeyboardInterrupt raised inside ``__del__`` (a data file's close, say);
    the training loop's flag stops training after that step all the same."""

    class ClosesAFile:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):  # the handler runs here, inside the finaliser
                pass

    exp = _exp(graph, tmp_path, "trainer.epochs=3")
    (tmp_path / "checkpoints").mkdir()
    trainer = Trainer(exp, exp.build_model())
    steps = []
    step = trainer._train_step

    def interrupted_step(batch):
        steps.append(1)
        if len(steps) == 2:
            ClosesAFile()  # made and finalised at once
        return step(batch)

    trainer._train_step = interrupted_step
    # Python's own handler, as in a terminal (a shell's background job inherits SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(steps) == 2 and trainer.state["epoch"] == 0
