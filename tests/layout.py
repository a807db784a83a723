"""Writing a graph with its time series in the documented generic layout (for tests that read
it back through ``GenericRiverDataset``, eager or lazy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr

UNITS = {"precipitation": "mm/day", "temperature": "degC", "pet": "mm/day"}


def write_generic(graph, root: Path, *, observed: bool = False, chunks: dict | None = None) -> Path:
    """``root/raw/nodes.csv`` and ``root/raw/timeseries.zarr`` (chunked as ``chunks``) of
    ``graph``; with ``observed`` also its ``q_obs`` as ``discharge``. Returns ``root``."""
    raw = Path(root) / "raw"
    raw.mkdir(parents=True)
    downstream = [""] * graph.num_nodes
    for u, v in graph.edge_index.t().tolist():
        downstream[u] = graph.node_id[v]
    table = pd.DataFrame({"id": graph.node_id, "downstream_id": downstream})
    table["lon"], table["lat"] = graph.pos[:, 0].numpy(), graph.pos[:, 1].numpy()
    for j, name in enumerate(graph.x_names):
        table[name] = graph.x[:, j].numpy()
    table.to_csv(raw / "nodes.csv", index=False)
    data = {
        name: (("time", "id"), graph.forcing[:, :, k].numpy().T, {"units": UNITS[name]})
        for k, name in enumerate(graph.forcing_names)
    }
    if observed:
        data["discharge"] = (("time", "id"), graph.q_obs.numpy().T, {"units": "m3/s"})
    ds = xr.Dataset(data, coords={"time": graph.time, "id": graph.node_id})
    ds.chunk(chunks or {"time": 90, "id": 16}).to_zarr(raw / "timeseries.zarr")
    return Path(root)
