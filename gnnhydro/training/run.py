"""The CLI's main jobs on run directories: train, evaluate, predict and export.

The pieces live by job: :mod:`~gnnhydro.training.experiment` (data, periods, split),
:mod:`~gnnhydro.training.model` (the model from the config),
:mod:`~gnnhydro.training.trainer` (the training loop), :mod:`~gnnhydro.training.checkpoint`
(atomic checkpoints), :mod:`~gnnhydro.training.rundir` (run-directory rules) and
:mod:`~gnnhydro.training.outputs` (metrics, parameter maps, discharge, plots).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gnnhydro.models.streaming import DEFAULT_NODE_CHUNK, DEFAULT_TIME_CHUNK
from gnnhydro.training.checkpoint import best_checkpoint, load_weights
from gnnhydro.training.experiment import (
    Experiment,
    as_single_graph,
    build_dataset,
    make_gauge_split,
    provenance,
)
from gnnhydro.training.gauge_context import (
    attach_gauge_context,
    load_gauge_table,
    needs_gauge_context,
)
from gnnhydro.training.model import ModelInputs, build_model
from gnnhydro.training.outputs import (
    FORMAT_SUFFIX,
    evaluate_model,
    parameter_format,
    parameter_recovery,
    summarize_metrics,
    write_parameter_maps,
)
from gnnhydro.training.trainer import train

log = logging.getLogger("gnnhydro")

__all__ = [
    "train",
    "evaluate",
    "predict",
    "export_run",
    "load_run",
    "load_model",
    "Experiment",
    "attributes_by_name",
    "build_dataset",
    "build_model",
    "make_gauge_split",
    "parameter_recovery",
    "summarize_metrics",
]


def load_run(
    run_dir: str | Path, *, dataset_cfg: DictConfig | None = None
) -> tuple[Experiment, torch.nn.Module]:
    """Rebuild the experiment and trained model of ``run_dir`` (optionally on another dataset)
    from the run's own ``config.yaml`` and its best checkpoint (``last.pt`` without one)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a gnnhydro run directory (no config.yaml)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    ckpt = best_checkpoint(run_dir)
    train_exp = Experiment(cfg, run_dir)
    model = train_exp.build_model()
    payload = load_weights(model, ckpt)
    log.info("loaded %s (epoch %s) of %s", ckpt.name, payload.get("epoch", "?"), run_dir)
    train_exp.checkpoint = ckpt
    if dataset_cfg is None:
        return train_exp, model
    cfg2 = OmegaConf.merge(cfg, {"dataset": dataset_cfg})
    return Experiment(cfg2, run_dir), model


def load_model(run_dir: str | Path) -> tuple[DictConfig, torch.nn.Module, Path]:
    """The trained model of ``run_dir`` without its training dataset: built from the run's
    ``config.yaml`` and ``model_inputs.json`` (what the model knows of its data), weights and
    normalisation statistics from the best checkpoint. Runs written before
    ``model_inputs.json`` existed rebuild the training experiment instead."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a gnnhydro run directory (no config.yaml)")
    if not (run_dir / "model_inputs.json").exists():
        exp, model = load_run(run_dir)
        return exp.cfg, model, exp.checkpoint
    cfg = OmegaConf.load(run_dir / "config.yaml")
    ckpt = best_checkpoint(run_dir)
    model = build_model(cfg, ModelInputs.load(run_dir / "model_inputs.json"))
    payload = load_weights(model, ckpt)
    log.info("loaded %s (epoch %s) of %s", ckpt.name, payload.get("epoch", "?"), run_dir)
    return cfg, model, ckpt


def evaluate(run_dir: str | Path) -> pd.DataFrame:
    """Re-evaluate a trained run: rewrite metrics.csv and exports from its best checkpoint."""
    exp, model = load_run(run_dir)
    print(f"evaluating {exp.checkpoint} ...")
    return evaluate_model(exp, model)


def _free_target(path: Path, overwrite: bool, what: str) -> None:
    """Refuse to write over an earlier output unless ``overwrite``; clear it when allowed."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not overwrite:
        raise ValueError(
            f"{what} {path} exists already: choose another out=PATH or pass overwrite=true"
        )
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def predict(
    run_dir: str | Path,
    dataset_cfg: DictConfig,
    out_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    stream: bool | None = None,
    discharge_format: str | None = None,
    time_chunk: int = DEFAULT_TIME_CHUNK,
    node_chunk: int = DEFAULT_NODE_CHUNK,
    progress: bool = True,
) -> Path:
    """Predict parameters and discharge on a dataset (no observations needed: ungauged basins).

    Writes ``parameters.gpkg`` (or ``.nc`` for a graph without geometry), the discharge and
    ``provenance.json`` (run, checkpoint, data root, time) into ``out_dir`` — default
    ``<run_dir>/predictions/<dataset name>``. An earlier prediction there is never replaced
    silently: pass ``overwrite=True``.

    ``stream`` (default: when the dataset is lazy, ``dataset.lazy=true``) runs the model chunk
    by chunk (:func:`~gnnhydro.models.streaming.stream_discharge`: ``time_chunk`` steps ×
    ``node_chunk`` nodes, forcing read per chunk) and writes ``discharge.zarr`` as it goes, so
    memory is set by the chunks, not by the network or the record; in memory the whole record
    runs at once and gives ``discharge.nc``. ``discharge_format``: ``zarr`` or ``netcdf``
    (default ``zarr`` streamed, ``netcdf`` in memory; a streamed netCDF is converted from the
    store at the end)."""
    from gnnhydro import export
    from gnnhydro.training.outputs import _node_geometry_known

    run_dir = Path(run_dir)
    target = (
        Path(out_dir)
        if out_dir
        else run_dir / "predictions" / str(dataset_cfg.get("name", "dataset"))
    )
    from gnnhydro.training.trainer import distributed_context

    rank, world = distributed_context()
    if stream is None:
        stream = bool(dataset_cfg.get("lazy", False)) or world > 1
    if world > 1 and not stream:
        raise ValueError(
            "predict under torchrun is streamed: leave stream unset or pass stream=true"
        )
    main = rank == 0
    fmt_q = discharge_format or ("zarr" if stream else "netcdf")
    if fmt_q not in ("zarr", "netcdf"):
        raise ValueError(f"discharge_format must be 'zarr' or 'netcdf', got {fmt_q!r}")
    if fmt_q == "zarr" and not stream:
        raise ValueError(
            "discharge_format=zarr is written by streamed prediction: pass stream=true"
        )
    if not overwrite:  # fail before the work; with overwrite, replaced once all succeeded
        _free_target(target, False, "prediction folder")
    # the training run's architecture, weights and normalisation, not its dataset
    run_cfg, model, checkpoint = load_model(run_dir)
    dataset = build_dataset(dataset_cfg)
    graph = as_single_graph(dataset)
    graph.x = attributes_by_name(graph, model.x_names)
    if needs_gauge_context(str(run_cfg.parameterizer.name)):  # what the training gauges knew
        attach_gauge_context(
            graph, load_gauge_table(run_dir), donors=int(run_cfg.parameterizer.get("donors", 4))
        )
    if (run_dir / "model_inputs.json").exists():
        what = f"predict on {dataset_cfg.get('name', 'the dataset')}"
        ModelInputs.load(run_dir / "model_inputs.json").check(graph, what)
    model.eval()
    time = np.asarray(graph.time)
    record = {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(checkpoint),
        "dataset": str(dataset_cfg.get("name", "")),
        "dataset_root": str(dataset_cfg.get("root", "")),
        "written": provenance()["started"],
    }
    step = float(getattr(graph, "step_seconds", 86400.0))
    warmup = int(round(float(dataset_cfg.get("warmup_days", 0) or 0) * 86400.0 / step))
    warmup = min(warmup, len(time))
    log.info(
        "predicting %d nodes x %d time steps%s ...",
        graph.num_nodes,
        len(time),
        f" (streamed: {time_chunk} steps x {node_chunk} nodes per chunk)" if stream else "",
    )
    staging = target.with_name(target.name + ".partial")
    if main:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    if stream:
        params = _predict_streamed(
            model, dataset, graph, staging, record, warmup, time_chunk, node_chunk,
            progress and main, rank=rank, world=world,
        )  # fmt: skip
        if not main:  # rank 0 writes everything
            return target
        if fmt_q == "netcdf":
            store = staging / "discharge.zarr"
            export.DischargeZarrWriter.to_netcdf_of(store, staging / "discharge.nc")
            shutil.rmtree(store)
    else:
        with torch.no_grad():
            out = model(graph)
        params = out["params"]
        export.export_discharge(
            graph,
            out["discharge"].float(),
            time,
            staging / "discharge.nc",
            warmup_steps=warmup,
            attrs=record,
        )
    fmt = "gpkg" if _node_geometry_known(graph) else "netcdf"
    write_parameter_maps(
        graph, params, model.param_specs, staging, [fmt], time_axis=time, attrs=record
    )
    (staging / "provenance.json").write_text(json.dumps(provenance(**record), indent=2))
    _free_target(target, overwrite, "prediction folder")  # replaced only once all succeeded
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


def _predict_streamed(
    model: torch.nn.Module,
    dataset: Any,
    graph: Any,
    folder: Path,
    record: dict[str, Any],
    warmup: int,
    time_chunk: int,
    node_chunk: int,
    progress: bool,
    *,
    rank: int = 0,
    world: int = 1,
) -> dict[str, Tensor]:
    """Stream the model over ``graph`` into ``folder/discharge.zarr`` (rank 0 writes; under
    torchrun every rank runs its share of the runoff); the parameters."""
    from tqdm.auto import tqdm

    from gnnhydro.export import DischargeZarrWriter
    from gnnhydro.models.streaming import stream_discharge

    time = np.asarray(graph.time)
    reader = getattr(dataset, "reader", None) if getattr(dataset, "lazy", False) else None
    if reader is not None:
        names = list(reader.forcing_names)

        def forcing(t0: int, t1: int, nodes: Any) -> Tensor:
            return reader.read(t0, t1, nodes=nodes)

    else:
        names = list(graph.forcing_names)

        def forcing(t0: int, t1: int, nodes: Any) -> Tensor:
            return graph.forcing[nodes, t0:t1].float()

    writer = None
    if rank == 0:
        writer = DischargeZarrWriter(
            folder / "discharge.zarr",
            graph,
            time,
            time_chunk=time_chunk,
            warmup_steps=warmup,
            attrs=record,
        )
    bar = tqdm(total=len(time), desc="predict", unit="step", disable=not progress)

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    params = stream_discharge(
        model,
        graph,
        forcing,
        names,
        writer.write if writer is not None else lambda t0, q: None,
        num_steps=len(time),
        time=time,
        time_chunk=time_chunk,
        node_chunk=node_chunk,
        progress=advance,
        rank=rank,
        world=world,
    )
    bar.close()
    if writer is not None:
        writer.close()
    return params


def attributes_by_name(graph: Any, names: list[str] | None) -> Tensor:
    """``[N, F]`` static attributes in the order ``names`` (the model's training attributes),
    looked up by NAME in ``graph.x_names`` and, failing that, among the graph's per-node
    attributes (``area_km2``, ``length_m``, ``slope``, ...). Raises naming missing attributes."""
    if names is None:
        return graph.x.float()
    have = list(getattr(graph, "x_names", None) or [])
    columns, missing = [], []
    for name in names:
        if name in have:
            columns.append(graph.x[:, have.index(name)].float())
        elif isinstance(getattr(graph, name, None), Tensor) and graph[name].shape == (
            graph.num_nodes,
        ):
            columns.append(graph[name].float())
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"the dataset lacks static attributes {missing} that the model was trained on; it has {have}"
        )
    return torch.stack(columns, dim=1)


def export_run(
    run_dir: str | Path,
    fmt: str = "gpkg",
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Export a trained run's parameter maps (units from the specs) to ``gpkg``, ``parquet``,
    ``netcdf`` or ``csv``: to the file ``out``, default ``<run_dir>/exports/parameters.<suffix>``
    (the training's own ``parameters.gpkg`` is left as it is). An existing file is replaced
    only with ``overwrite=True``."""
    from gnnhydro.training.outputs import output_provenance

    fmt = parameter_format(fmt)
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / "exports" / f"parameters.{FORMAT_SUFFIX[fmt]}"
    if path.suffix.lower() != f".{FORMAT_SUFFIX[fmt]}":
        raise ValueError(f"out={path}: a {fmt} file ends in .{FORMAT_SUFFIX[fmt]}")
    _free_target(path, overwrite, "export file")
    exp, model = load_run(run_dir)
    model.eval()
    with torch.no_grad():
        result = model(exp.whole_record().to(exp.device))
    write_parameter_maps(
        exp.graph,
        result["params"],
        model.param_specs,
        path.parent,
        [fmt],
        time_axis=exp.time,
        attrs=output_provenance(exp, checkpoint=str(exp.checkpoint)),
        stem=path.stem,
    )
    return path
