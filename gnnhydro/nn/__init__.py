"""Parameterizers (GNN, MLP) and bounded parameter heads.

Static attributes (and river topology) → physical parameters by NAME, bounded through
:func:`gnnhydro.spec.to_bounds`. Build one by registry name with :func:`build_parameterizer`
(``"sage"``, ``"gatv2"``, ``"gcn"``, ``"gin"``, ``"mlp"``; the gauge-informed ``"regional"`` and
the baselines ``"global"`` and ``"donor"``, :mod:`gnnhydro.nn.regional`).
"""

from gnnhydro.nn.heads import ParameterHeads, TemporalEncoder
from gnnhydro.nn.parameterizers import (
    DirectionalConv,
    GATv2Parameterizer,
    GCNParameterizer,
    GINParameterizer,
    GNNParameterizer,
    MLPParameterizer,
    SAGEParameterizer,
    build_parameterizer,
    get_parameterizer,
    list_parameterizers,
    normalize_spec_groups,
    register_parameterizer,
)
from gnnhydro.nn.regional import DonorParameterizer, GlobalParameterizer, RegionalParameterizer

__all__ = [
    "ParameterHeads",
    "TemporalEncoder",
    "GNNParameterizer",
    "SAGEParameterizer",
    "GATv2Parameterizer",
    "GCNParameterizer",
    "GINParameterizer",
    "MLPParameterizer",
    "RegionalParameterizer",
    "GlobalParameterizer",
    "DonorParameterizer",
    "DirectionalConv",
    "build_parameterizer",
    "get_parameterizer",
    "list_parameterizers",
    "register_parameterizer",
    "normalize_spec_groups",
]
