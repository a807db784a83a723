"""RAPID (David et al. 2011) routing inputs as a routing dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnhydro.datasets._checks import match_ids
from gnnhydro.datasets.base import RiverDataset
from gnnhydro.graph import RiverGraph
from gnnhydro.routing.io import (  # the one checked reader per RAPID file, re-exported
    read_m3_riv,
    read_muskingum_kx,
    read_rapid_column,
)

__all__ = ["RapidDataset", "read_rapid_column", "read_m3_riv", "read_muskingum_kx"]


class RapidDataset(RiverDataset):
    r"""A RAPID routing problem (one item).

    Files in ``root/raw/``: ``rapid_connect.csv`` (id, downstream id (0 = outlet), ...),
    ``riv_bas_id.csv`` (the reaches routed, in computation order), ``k.csv`` [s] and ``x.csv``
    [-] (Muskingum parameters in ``riv_bas_id`` order), the inflow file ``m3_riv.nc`` (volume
    per step [m³] of lateral inflow), and optionally ``Qobs.csv`` (rows = time steps, columns =
    gauges, m³/s, negative/NaN = missing) with ``obs_tot_id.csv`` (gauge reach ids).

    Item: nodes = ``riv_bas_id`` reaches in that order (a reach draining out of the routed set
    is an outlet); ``lateral_inflow`` ``[N, T]`` m³/s = ``m3_riv`` / step (matched by ``rivid``);
    ``musk_s`` ``[N]`` [s] and ``musx`` ``[N]`` (also as ``x`` with ``x_names``); ``q_obs`` when
    observation files are present.

    Args:
        root: dataset root.
        inflow_file: name of the inflow netCDF in ``raw/``.
        start_time / step_seconds: time axis for inflow files without a time coordinate.
    """

    name = "rapid"

    def __init__(
        self,
        root: str | Path,
        inflow_file: str = "m3_riv.nc",
        start_time: Any = None,
        step_seconds: float | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
    ) -> None:
        self.inflow_file = inflow_file
        self.start_time = start_time
        self.step_seconds = step_seconds
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, source_dir)

    def config(self) -> dict[str, Any]:
        return {
            "inflow_file": self.inflow_file,
            "start_time": str(self.start_time),
            "step_seconds": self.step_seconds,
        }

    @property
    def raw_file_names(self) -> list[str]:
        return ["rapid_connect.csv", "riv_bas_id.csv", "k.csv", "x.csv", self.inflow_file]

    def download(self) -> None:
        if self.source_dir is not None:
            return super().download()
        raise FileNotFoundError(
            f"RapidDataset: put {self.raw_file_names} (RAPID input files) into {self.raw_dir}; RAPID inputs "
            "are produced per basin (e.g. with RAPIDpy), there is no public default to download"
        )

    def build(self) -> list[RiverGraph]:
        raw = Path(self.raw_dir)
        full = RiverGraph.from_rapid(raw / "rapid_connect.csv")
        bas = read_rapid_column(raw / "riv_bas_id.csv", np.int64).tolist()
        k, x = read_muskingum_kx(raw / "k.csv", raw / "x.csv", bas, order="riv_bas_id.csv")
        graph = full.subgraph_nodes(full.index_of(bas)) if list(full.node_id) != bas else full
        volume, rivid, time, step = read_m3_riv(
            raw / self.inflow_file, start_time=self.start_time, step_seconds=self.step_seconds
        )
        pos = match_ids(rivid, bas, what=f"{self.inflow_file} rivid")
        graph.lateral_inflow = torch.as_tensor((volume[:, pos] / step).T, dtype=torch.float32)
        graph.musk_s = torch.as_tensor(k, dtype=torch.float32)
        graph.musx = torch.as_tensor(x, dtype=torch.float32)
        graph.x = torch.stack([graph.musk_s, graph.musx], 1)
        graph.x_names = ["musk_s", "musx"]
        graph.x_units = ["s", "-"]
        graph.time = time
        graph.step_seconds = step
        self._attach_observations(graph, raw, len(time))
        return [graph]

    def _attach_observations(self, graph: RiverGraph, raw: Path, num_steps: int) -> None:
        import pandas as pd

        n = graph.num_nodes
        q_obs = np.full((n, num_steps), np.nan)
        qfile, idfile = raw / "Qobs.csv", raw / "obs_tot_id.csv"
        gauge_nodes = np.zeros(0, dtype=np.int64)
        if qfile.exists() and idfile.exists():
            ids = read_rapid_column(idfile, np.int64).tolist()
            q = pd.read_csv(qfile, header=None).to_numpy(np.float64)
            if q.shape[1] != len(ids):
                raise ValueError(
                    f"Qobs.csv has {q.shape[1]} columns for {len(ids)} gauges in obs_tot_id.csv"
                )
            if q.shape[0] != num_steps:
                raise ValueError(
                    f"Qobs.csv has {q.shape[0]} rows, the inflow has {num_steps} time steps"
                )
            gauge_nodes = graph.index_of(ids).numpy()
            q_obs[gauge_nodes] = np.where(q >= 0, q, np.nan).T
        elif qfile.exists() != idfile.exists():
            raise ValueError("RAPID observations need both Qobs.csv and obs_tot_id.csv")
        graph.q_obs = torch.as_tensor(q_obs, dtype=torch.float32)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(gauge_nodes)] = True
        graph.gauge_mask = mask
        graph.gauge_index = mask.nonzero().flatten()
        graph.gauge_id = [str(graph.node_id[int(i)]) for i in graph.gauge_index]
