"""Scale benchmark: ``gnnhydro bench scale`` — streamed prediction and gauge-basin training on a
synthetic continent (:mod:`gnnhydro.datasets.continent`).

Prediction (default)::

    gnnhydro bench scale --nodes 180000 --years 2 --nmul 16 --json scale.json

runs HBV (``nmul`` components) + Muskingum with a GNN parameterizer over every reach, forcing read
from the continent's zarr store chunk by chunk, discharge written to a zarr store
(:func:`gnnhydro.models.streaming.stream_discharge`), and reports reach-steps per second and the
40-year time extrapolated from it, beside the anchors (target ≤ 30 min, moonshot ≤ 15 min for
180,000 reaches × 40 years; δHBV2.0 runs ~180,000 unit basins × 40 years in ~1 A100-hour).

Training::

    gnnhydro bench scale --train --nodes 200000 --gauges 2000 --years 2 --json train.json

times one epoch of ``trainer.sampler=gauge_basins`` (every gauge's upstream basin once, 1-year
windows after a 1-year warm-up, node-budget batches, forcing read per basin from the store).

The continent is generated (and cached under the data root, ``$GNNHYDRO_DATA_ROOT``) and its
dataset processed first, in this process; the timed work then runs in a fresh subprocess whose
own peak resident memory is reported (``peak_rss_gb``: ``getrusage`` of that process — loading
the processed network included, generation excluded). The JSON (``--json``) holds ``mode``,
``nodes``, ``steps``, ``seconds``, ``peak_rss_gb``; predict also ``reach_steps_per_s``; train
also ``gauges`` and ``seconds_per_epoch``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "continent_overrides"]

#: anchors printed beside the figures
PREDICT_TARGET_MIN = 30.0
PREDICT_MOONSHOT_MIN = 15.0
TRAIN_TARGET_MIN = 10.0
FORTY_YEARS = 14_610  # daily steps


def continent_overrides(nodes: int, years: int, gauges: int, seed: int = 0) -> list[str]:
    """The hydra overrides of ``dataset=continent`` at this size."""
    return [
        "dataset=continent",
        f"dataset.num_nodes={nodes}",
        f"dataset.years={years}",
        f"dataset.num_gauges={gauges}",
        f"dataset.seed={seed}",
    ]


def _default_gauges(nodes: int) -> int:
    return max(10, min(2000, nodes // 100))


def _peak_gpu_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def _dataset(args: argparse.Namespace) -> Any:
    from gnnhydro.config import compose
    from gnnhydro.training.experiment import build_dataset

    cfg = compose(continent_overrides(args.nodes, args.years, args.gauges, args.seed))
    return build_dataset(cfg.dataset), cfg


def _model_overrides(args: argparse.Namespace) -> list[str]:
    return [
        "model=hbv_muskingum",
        f"model.runoff.nmul={args.nmul}",
        "trainer.progress_bar=false",
        f"device={args.device}",
    ]


def _work_predict(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from gnnhydro.config import compose
    from gnnhydro.export import DischargeZarrWriter
    from gnnhydro.models.streaming import stream_discharge
    from gnnhydro.training.experiment import Experiment

    cfg = compose(
        [
            *continent_overrides(args.nodes, args.years, args.gauges, args.seed),
            *_model_overrides(args),
            "dataset.holdout.fraction=0",
        ]
    )
    exp = Experiment(cfg, Path(tempfile.gettempdir()))
    graph, reader = exp.graph.to(exp.device), exp.reader
    torch.manual_seed(0)
    model = exp.build_model().eval()
    time_axis = np.asarray(graph.time)
    steps = len(time_axis)
    with tempfile.TemporaryDirectory(dir=Path(exp.dataset.root)) as tmp:
        t0 = time.perf_counter()
        writer = DischargeZarrWriter(
            Path(tmp) / "discharge.zarr", graph, time_axis, time_chunk=args.time_chunk
        )
        stream_discharge(
            model,
            graph,
            lambda t0, t1, nodes: reader.read(t0, t1, nodes=nodes),
            reader.forcing_names,
            writer.write,
            num_steps=steps,
            time=time_axis,
            time_chunk=args.time_chunk,
            node_chunk=args.node_chunk,
        )
        writer.close()
        seconds = time.perf_counter() - t0
    rate = graph.num_nodes * steps / seconds
    return {
        "mode": "predict",
        "nodes": int(graph.num_nodes),
        "steps": int(steps),
        "nmul": int(args.nmul),
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(_peak_rss_gb(), 3),
        "peak_gpu_gb": _peak_gpu_gb(),
        "reach_steps_per_s": round(rate, 1),
        "forty_year_minutes": round(graph.num_nodes * FORTY_YEARS / rate / 60.0, 1),
        "threads": torch.get_num_threads(),
        "device": str(exp.device),
    }


def _work_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from gnnhydro.config import compose
    from gnnhydro.training.experiment import Experiment
    from gnnhydro.training.trainer import Trainer

    overrides = [
        *continent_overrides(args.nodes, args.years, args.gauges, args.seed),
        *_model_overrides(args),
        "dataset.holdout.fraction=0",
        "dataset.warmup_days=365",
        "trainer.window_days=365",
        "trainer.sampler=gauge_basins",
        f"trainer.max_nodes_per_batch={args.max_nodes_per_batch}",
        f"trainer.batch_size={args.batch_size}",
        "trainer.epochs=1",
    ]
    cfg = compose(overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        exp = Experiment(cfg, Path(run_dir))
        torch.manual_seed(0)
        trainer = Trainer(exp, exp.build_model())
        gauges = int(exp.split.train_index.numel())
        t0 = time.perf_counter()
        loss = trainer._train_epoch(0)
        seconds = time.perf_counter() - t0
    return {
        "mode": "train",
        "nodes": int(exp.graph.num_nodes),
        "gauges": gauges,
        "steps": int(cfg.trainer.window_days) + int(cfg.dataset.warmup_days),
        "nmul": int(args.nmul),
        "seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds, 2),
        "peak_rss_gb": round(_peak_rss_gb(), 3),
        "peak_gpu_gb": _peak_gpu_gb(),
        "train_loss": round(float(loss), 4),
        "max_nodes_per_batch": int(args.max_nodes_per_batch),
        "threads": torch.get_num_threads(),
        "device": str(exp.device),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gnnhydro bench scale",
        description="Streamed prediction (default) or one gauge-basin training epoch (--train) "
        "on a synthetic continent; figures beside the targets.",
    )
    p.add_argument("--nodes", type=int, required=True, help="reaches of the continent")
    p.add_argument("--years", type=int, required=True, help="years of daily forcing")
    p.add_argument("--gauges", type=int, default=None, help="gauges (default N/100, 10..2000)")
    p.add_argument("--nmul", type=int, default=16, help="HBV parallel components (default 16)")
    p.add_argument("--train", action="store_true", help="time one training epoch instead")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-chunk", type=int, default=365, help="predict: steps per chunk")
    p.add_argument("--node-chunk", type=int, default=16_384, help="predict: reaches per chunk")
    p.add_argument("--max-nodes-per-batch", type=int, default=10_000, help="train: node budget")
    p.add_argument("--batch-size", type=int, default=64, help="train: most basins per step")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def _report(result: dict[str, Any]) -> str:
    lines = [f"gnnhydro bench scale ({result['mode']}): {result['nodes']:,} reaches"]
    if result["mode"] == "predict":
        lines += [
            f"  {result['steps']} daily steps, HBV nmul {result['nmul']} + Muskingum, "
            f"{result['threads']} thread(s), {result['device']}",
            f"  time                {result['seconds']:.1f} s",
            f"  throughput          {result['reach_steps_per_s']:.3g} reach-steps/s",
            f"  40 years (extrap.)  {result['forty_year_minutes']:.1f} min for {result['nodes']:,} "
            f"reaches   target <= {PREDICT_TARGET_MIN:.0f} min, moonshot <= "
            f"{PREDICT_MOONSHOT_MIN:.0f} min; δHBV2.0: ~60 A100-min for 180,000 x 40 y",
            f"  peak RSS            {result['peak_rss_gb']:.2f} GB   target <= 8 GB",
        ]
    else:
        lines += [
            f"  {result['gauges']} gauges, windows of {result['steps']} steps (incl. warm-up), "
            f"HBV nmul {result['nmul']}, node budget {result['max_nodes_per_batch']:,}",
            f"  one epoch           {result['seconds_per_epoch']:.1f} s   target <= "
            f"{TRAIN_TARGET_MIN:.0f} min on 200,000 reaches with 2,000 gauges",
            f"  peak RSS            {result['peak_rss_gb']:.2f} GB   target <= 6 GB",
            f"  train loss          {result['train_loss']}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.gauges is None:
        args.gauges = _default_gauges(args.nodes)
    if args.train and args.years < 2:
        print(
            "gnnhydro bench scale --train needs --years >= 2 (1-year windows after a 1-year warm-up)"
        )
        return 2
    if args.worker:
        result = _work_train(args) if args.train else _work_predict(args)
        print(json.dumps(result))
        return 0
    t0 = time.perf_counter()
    try:
        dataset, _ = _dataset(args)  # generate + process once (cached)
    except ValueError as err:  # a size the continent cannot have: one line, exit 2
        print(f"gnnhydro bench scale: {err}", file=sys.stderr)
        return 2
    print(
        f"continent of {args.nodes:,} reaches x {args.years} years, {args.gauges} gauges ready "
        f"({time.perf_counter() - t0:.0f} s, cached in {dataset.root})",
        flush=True,
    )
    del dataset
    command = [sys.executable, "-m", "gnnhydro.bench.scale", "--worker", *(argv or [])]
    if "--gauges" not in (argv or []):
        command += ["--gauges", str(args.gauges)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        return done.returncode
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(_report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
