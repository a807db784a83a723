"""PyG datasets of river networks with forcing and observations.

Every item is a :class:`~gnnhydro.graph.RiverGraph` following the dataset item conventions
(``x``/``x_names``/``x_units``, ``forcing`` ``[N, T, F]``/``forcing_names``/``forcing_units``,
``lateral_inflow`` ``[N, T]`` m³/s, ``q_obs`` ``[N, T]`` m³/s, ``gauge_mask``, ``gauge_index``,
``gauge_id``, ``time``, ``step_seconds``, ``area_km2``). ``DATASETS`` maps the hydra dataset
names to the classes.
"""

from gnnhydro.datasets.base import RiverDataset
from gnnhydro.datasets.camels_us import CamelsUS
from gnnhydro.datasets.continent import SyntheticContinent
from gnnhydro.datasets.drb import DelawareRiverBasin
from gnnhydro.datasets.forcing import ForcingReader
from gnnhydro.datasets.generic import GenericRiverDataset
from gnnhydro.datasets.nwm import NWMDomain
from gnnhydro.datasets.rapid import RapidDataset
from gnnhydro.datasets.splits import GaugeSplit, k_fold_gauges, spatial_holdout
from gnnhydro.datasets.synthetic import SyntheticRiverBasin
from gnnhydro.datasets.windows import TimeWindows, slice_time, time_slice

DATASETS: dict[str, type] = {
    "drb": DelawareRiverBasin,
    "nwm": NWMDomain,
    "camels_us": CamelsUS,
    "generic": GenericRiverDataset,
    "rapid": RapidDataset,
}

DATASETS["synthetic"] = SyntheticRiverBasin
DATASETS["continent"] = SyntheticContinent

__all__ = [
    "DATASETS",
    "RiverDataset",
    "DelawareRiverBasin",
    "NWMDomain",
    "CamelsUS",
    "GenericRiverDataset",
    "RapidDataset",
    "SyntheticRiverBasin",
    "SyntheticContinent",
    "ForcingReader",
    "TimeWindows",
    "slice_time",
    "time_slice",
    "GaugeSplit",
    "spatial_holdout",
    "k_fold_gauges",
]
