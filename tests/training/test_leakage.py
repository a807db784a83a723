"""No leakage into held-out predictions: what a gauge-informed model predicts at held-out
gauges must not depend on the held-out gauges' observations (any period) or on any gauge's
test-period observations; it does depend on training gauges' training-period observations."""

from __future__ import annotations

import pytest
import torch

from gnnhydro.config import compose
from gnnhydro.datasets.synthetic import generate_synthetic_basin
from gnnhydro.training.experiment import Experiment, seed_everything
from gnnhydro.training.trainer import Trainer


def _graph():
    return generate_synthetic_basin(seed=6, num_nodes=60, years=2)


def _held_out_prediction(graph, run_dir, parameterizer):
    parameterizer, *options = parameterizer.split("+")  # e.g. "regional+proximity"
    options = [o if "=" in o else f"{o}=true" for o in options]
    cfg = compose(
        [
            f"parameterizer={parameterizer}",
            *(f"parameterizer.{o}" for o in options),
            "dataset.periods.train=[2000-01-01,2000-12-31]",
            "dataset.periods.validation=null",
            "dataset.periods.test=[2001-01-01,2001-12-31]",
            "dataset.warmup_days=30",
            "trainer.window_days=90",
            "trainer.batch_size=2",
            "trainer.steps_per_epoch=2",
            "model.runoff.nmul=1",
            "parameterizer.hidden_channels=8",
            *(["parameterizer.num_layers=2"] if parameterizer == "regional" else []),
        ]
    )
    seed_everything(0)
    exp = Experiment(cfg, run_dir, graph=graph)
    model = exp.build_model()
    trainer = Trainer(exp, model)
    for epoch in range(2):
        trainer._train_epoch(epoch)
    model.eval()
    with torch.no_grad():
        out = model(exp.whole_record())
    held = exp.split.holdout_index
    return (
        exp,
        out["discharge"][held],
        {k: v[exp.split.holdout_exclusive] for k, v in out["params"].items()},
    )


@pytest.mark.parametrize(
    "parameterizer", ["regional", "regional+proximity", "regional+donor_residual=basin", "donor"]
)
def test_held_out_predictions_ignore_held_out_and_test_period_observations(tmp_path, parameterizer):
    exp, reference, ref_params = _held_out_prediction(_graph(), tmp_path / "a", parameterizer)
    held, test0 = exp.split.holdout_index, exp.periods["test"][0]
    changed = _graph()
    generator = torch.Generator().manual_seed(1)
    q = changed.q_obs
    q[held] = q[held] * 3.0 + 1.0  # held-out gauges, every period
    gauges = changed.gauge_index
    q[gauges, test0:] = torch.rand(gauges.numel(), q.shape[1] - test0, generator=generator) * 50.0
    _, prediction, params = _held_out_prediction(changed, tmp_path / "b", parameterizer)
    assert torch.equal(prediction, reference)
    for name, value in params.items():
        assert torch.equal(value, ref_params[name]), name
    # the positive control: a training gauge's training-period record does matter
    control = _graph()
    train_gauge = exp.split.train_index[0]
    control.q_obs[train_gauge, :test0] *= 2.0
    _, moved, _ = _held_out_prediction(control, tmp_path / "c", parameterizer)
    assert not torch.equal(moved, reference)
