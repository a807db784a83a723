"""HydroEnsemble: several independently initialised HydroModels trained side by side.

Each member is a complete :class:`~gnnhydro.models.HydroModel` (its own parameterizer weights;
the physics is shared code, not shared state). During training every member sees the same
batches and is trained on its *own* loss (the trainer averages the members' losses, so their
gradients never mix); the ensemble's prediction is the member mean of the discharge — the usual
seed ensemble of hydrological deep learning (e.g. neuralhydrology's ensembles of runs), here in
one run directory, one checkpoint and one training loop.

The exported parameter maps are the member means of each physical parameter; they describe the
ensemble's typical parameters, not a parameter set that reproduces the mean discharge (HBV is
non-linear). ``members_params`` keeps every member's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gnnhydro.models.hydro_model import HydroModel
from gnnhydro.spec import ParamSpec

__all__ = ["HydroEnsemble"]

#: outputs averaged over the members (every one is ``[N, T]`` or ``[B·N, T]``)
_MEAN_KEYS = ("discharge", "runoff", "lateral_inflow")


class HydroEnsemble(nn.Module):
    """Member-mean prediction of several :class:`HydroModel` s with the same configuration.

    Args:
        members: at least two models with the same parameter specs and attribute names.

    Shapes:
        as :class:`HydroModel`; ``out["discharge"]`` ``[N, T]`` m³/s is the member mean,
        ``out["params"]`` name → member-mean tensor, ``out["members"]`` the members' own
        output dicts (the trainer computes one loss per member from them).
    """

    def __init__(self, members: Sequence[HydroModel]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"HydroEnsemble needs at least 2 members, got {len(members)}")
        first = members[0]
        for k, m in enumerate(members[1:], start=1):
            if list(m.param_specs) != list(first.param_specs) or m.x_names != first.x_names:
                raise ValueError(
                    f"HydroEnsemble member {k} differs from member 0 in parameters "
                    f"({list(m.param_specs)} vs {list(first.param_specs)}) or attributes"
                )
        self.members = nn.ModuleList(members)

    # the attributes the runner, exports and predictions read from a model
    @property
    def param_specs(self) -> dict[str, ParamSpec]:
        return self.members[0].param_specs

    @property
    def x_names(self) -> list[str] | None:
        return self.members[0].x_names

    @property
    def mode(self) -> str:
        return self.members[0].mode

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, batch: Any, **kwargs: Any) -> dict[str, Any]:
        outs = [member(batch, **kwargs) for member in self.members]
        out: dict[str, Any] = {"members": outs}
        for key in _MEAN_KEYS:
            if all(key in o for o in outs):
                out[key] = torch.stack([o[key] for o in outs]).mean(0)
        out["members_params"] = [o["params"] for o in outs]
        out["params"] = {
            name: torch.stack([o["params"][name] for o in outs]).mean(0)
            for name in outs[0]["params"]
        }
        return out

    @staticmethod
    def member_outputs(out: dict[str, Any]) -> list[dict[str, Tensor]]:
        """The members' output dicts of an ensemble output, or ``[out]`` for a single model."""
        return list(out.get("members", [out]))
