"""HydroEnsemble: member-mean prediction, one loss per member, gradients that never mix."""

import pytest
import torch

from gnnhydro.models import HydroEnsemble
from gnnhydro.training.losses import build_loss
from gnnhydro.training.trainer import _clip_gradients, _masked_loss
from tests.models.test_hydro_model import _graph, _model


def test_prediction_is_the_member_mean_and_members_stay_independent():
    torch.manual_seed(0)
    g = _graph()
    ensemble = HydroEnsemble([_model("full"), _model("full"), _model("full")])
    out = ensemble(g)
    singles = [m(g) for m in ensemble.members]
    torch.testing.assert_close(
        out["discharge"], torch.stack([s["discharge"] for s in singles]).mean(0)
    )
    torch.testing.assert_close(
        out["params"]["fc"], torch.stack([s["params"]["fc"] for s in singles]).mean(0)
    )
    assert not torch.allclose(singles[0]["discharge"], singles[1]["discharge"])
    assert list(ensemble.param_specs) == list(ensemble.members[0].param_specs)

    # the trainer's loss: the mean of the members' own losses, not the loss of the mean
    g.q_obs = singles[0]["discharge"].detach() * 1.3 + 0.1
    g.train_gauge_mask = torch.tensor([True, False, True, True])
    loss_fn = build_loss("nse")
    loss = _masked_loss(loss_fn, out, g, 0, "train_gauge_mask")
    own = [_masked_loss(loss_fn, s, g, 0, "train_gauge_mask") for s in singles]
    torch.testing.assert_close(loss, torch.stack(own).mean())
    loss.backward()
    # member 1's gradient is its own loss's gradient / 3; member 0's loss does not reach it
    grads = [p.grad.clone() for p in ensemble.members[1].parameters() if p.grad is not None]
    ensemble.zero_grad()
    (own[1] / 3).backward()
    expected = [p.grad for p in ensemble.members[1].parameters() if p.grad is not None]
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_members_are_clipped_separately():
    torch.manual_seed(1)
    ensemble = HydroEnsemble([_model("full"), _model("full")])
    for k, member in enumerate(ensemble.members):
        for p in member.parameters():
            p.grad = torch.full_like(p, 10.0 ** (k + 1))
    _clip_gradients(ensemble, 1.0)
    for member in ensemble.members:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in member.parameters()]))
        assert norm == pytest.approx(1.0, rel=1e-4)


def test_members_must_match():
    with pytest.raises(ValueError, match="at least 2"):
        HydroEnsemble([_model("full")])
    with pytest.raises(ValueError, match="member 1"):
        HydroEnsemble([_model("full"), _model("routing")])
