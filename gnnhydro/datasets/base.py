"""Base class of gnnhydro datasets: a PyG ``InMemoryDataset`` whose items are :class:`RiverGraph`
objects following the dataset item conventions (see ``gnnhydro.datasets``)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import os.path as osp
import pickle
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import InMemoryDataset
from torch_geometric.data.dataset import files_exist

from gnnhydro.datasets._checks import check_item_forcing
from gnnhydro.graph import RiverGraph

__all__ = ["RiverDataset", "copy_source_files", "download_url_to", "atomic_torch_save"]

logger = logging.getLogger("gnnhydro")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a temporary file in the same folder and ``os.replace``: a process
    killed while writing leaves the previous file (or none), never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: what ``torch.load`` raises on a truncated or corrupt file
_UNREADABLE = (RuntimeError, EOFError, pickle.UnpicklingError)


def _readable(path: str | Path, *, weights_only: bool) -> Exception | None:
    """``None`` when ``torch.load`` reads ``path``, else the error (truncated or corrupt file)."""
    try:
        torch.load(path, weights_only=weights_only)
    except OSError:
        raise
    except _UNREADABLE as err:
        return err
    return None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def download_url_to(url: str, path: str | Path, *, timeout: float = 120.0) -> Path:
    """Download ``url`` to ``path`` with :mod:`urllib` (atomic: a ``.part`` file renamed on success)."""
    import urllib.request

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as fh:  # noqa: S310
            shutil.copyfileobj(response, fh)
    except Exception as err:  # network errors: say which URL failed and how to proceed
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {url} to {path}: {err}. Download it by hand into {path.parent} "
            "or pass source_dir= pointing to a local copy."
        ) from err
    part.replace(path)
    return path


def copy_source_files(source_dir: str | Path, raw_dir: str | Path, names: Sequence[str]) -> None:
    """Copy ``names`` (paths relative to ``source_dir``; directories copied whole) into ``raw_dir``.

    Raises ``FileNotFoundError`` naming every missing file.
    """
    source_dir, raw_dir = Path(source_dir), Path(raw_dir)
    missing = [n for n in names if not (source_dir / n).exists()]
    if missing:
        raise FileNotFoundError(f"source_dir {source_dir} lacks {missing}")
    for name in names:
        src, dst = source_dir / name, raw_dir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)


def attribute_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """NaN-aware mean and standard deviation of static attributes (rows = training nodes); an
    undefined or zero standard deviation is returned as 1 so ``(x − mean)/std`` stays finite.

    Shapes:
        x ``[M, F]`` → mean ``[F]``, std ``[F]`` (float32).
    """
    x = x.double()
    valid = ~torch.isnan(x)
    count = valid.sum(0)
    mean = torch.where(valid, x, 0.0).sum(0) / count.clamp_min(1)
    var = torch.where(valid, (x - mean) ** 2, 0.0).sum(0) / count.clamp_min(1)
    std = var.sqrt()
    mean = torch.where(count > 0, mean, 0.0)
    std = torch.where((count > 0) & (std > 1e-12), std, 1.0)
    return mean.float(), std.float()


class RiverDataset(InMemoryDataset):
    r"""Base class of river datasets: ``root/raw`` → :meth:`process` → ``root/processed``.

    Subclasses implement :attr:`raw_file_names`, :meth:`download` and :meth:`build` (which returns
    the list of :class:`RiverGraph` items following the item conventions); the base class applies
    ``pre_filter``/``pre_transform``, saves the items to ``root/processed/`` and reloads them.
    The processed file name carries a hash of :meth:`config` so that datasets built with other
    options never collide. Files in ``processed/`` are written atomically (a temporary file in
    the same folder, then ``os.replace``); one that is unreadable all the same (e.g. truncated
    by a full disk) is rebuilt from ``raw/`` with a warning on the ``gnnhydro`` logger, or, when
    ``raw/`` cannot be had, raises a ``ValueError`` naming it. A readable processed file is
    self-contained: ``raw/`` is then neither needed nor downloaded.

    Item conventions (names exact): ``x`` ``[N, F]`` static attributes in physical units with
    ``x_names``/``x_units``; ``forcing`` ``[N, T, Ff]`` with ``forcing_names``/``forcing_units``
    (variables are found by name: ``precipitation`` and ``pet`` always, ``temperature`` only when
    the source has it — never a filled column; see :func:`~gnnhydro.datasets.forcing.warn_no_temperature`);
    ``lateral_inflow`` ``[N, T]`` m³/s (routing datasets); ``q_obs`` ``[N, T]`` m³/s (NaN = none),
    ``gauge_mask`` ``[N]``, ``gauge_index`` ``[G]``, ``gauge_id``; ``time`` (numpy
    ``datetime64[ns]`` ``[T]``); ``step_seconds``; ``area_km2`` ``[N]`` km².

    Args:
        root: dataset root directory (holds ``raw/`` and ``processed/``).
        transform: applied to every item on access.
        pre_transform: applied once before saving.
        pre_filter: items for which it returns ``False`` are not saved.
        force_reload: re-run :meth:`process` even if processed files exist.
        source_dir: a local copy of the raw files; :meth:`download` copies from it instead of
            downloading.
        log: print progress messages.
    """

    #: short dataset name (also the hydra dataset name).
    name: str = "river"
    #: version of what :meth:`build` writes; raising it when the build changes (new graph
    #: attributes) gives new processed file names, so caches of the old build are not read
    processed_version: int = 0

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        pre_filter: Callable | None = None,
        force_reload: bool = False,
        source_dir: str | Path | None = None,
        log: bool = False,
    ) -> None:
        self.source_dir = Path(source_dir) if source_dir is not None else None
        self._graphs: list[RiverGraph] = []
        # PyG's own markers of pre_transform/pre_filter are written non-atomically and read
        # before anything else: an unreadable one (a killed writer) is dropped with a notice.
        for marker in ("pre_transform.pt", "pre_filter.pt"):
            path = Path(osp.expanduser(str(root))) / "processed" / marker
            if path.exists() and (err := _readable(path, weights_only=False)) is not None:
                logger.warning(
                    "%s: removed unreadable %s (%s)", type(self).__name__, path, _short(err)
                )
                path.unlink()
        super().__init__(
            str(root), transform, pre_transform, pre_filter, log=log, force_reload=force_reload
        )
        path = self.processed_paths[0]
        try:
            self._graphs = self._load_graphs(path)
        except OSError:
            raise
        except _UNREADABLE as err:  # truncated (a process killed while writing) or corrupt
            self._rebuild(path, err)

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """Options that change the processed data (hashed into the processed file name)."""
        return {}

    def config_hash(self) -> str:
        key = {"class": type(self).__name__, **self.config()}
        if self.processed_version:  # 0 keeps the names of caches written before versions
            key["processed_version"] = self.processed_version
        text = json.dumps(key, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.name}_{self.config_hash()}.pt"]

    # ------------------------------------------------------------------ download / process
    def _download(self) -> None:
        # the processed files are self-contained: with them present, raw/ is not needed (PyG
        # would download it all the same); an unreadable one fetches it in _rebuild
        if not self.force_reload and files_exist(self.processed_paths):
            return
        super()._download()

    def download(self) -> None:
        if self.source_dir is not None:
            copy_source_files(self.source_dir, self.raw_dir, self.raw_file_names)
            return
        raise FileNotFoundError(
            f"{type(self).__name__}: raw files {self.raw_file_names} not found in {self.raw_dir}"
        )

    def build(self) -> list[RiverGraph]:
        """Read ``root/raw`` and return the items (overridden by every dataset)."""
        raise NotImplementedError

    def check_forcing(self, graphs: list[RiverGraph]) -> None:
        """Check the built items' forcing for physically implausible values (negative
        precipitation/PET raise, a temperature that looks like kelvin warns; see
        :func:`~gnnhydro.datasets._checks.check_forcing_plausible`). Datasets that check while
        reading (in the file's units) override it."""
        for g in graphs:
            check_item_forcing(g, what=type(self).__name__)

    def process(self) -> None:
        graphs = self.build()
        self.check_forcing(graphs)
        if self.pre_filter is not None:
            graphs = [g for g in graphs if self.pre_filter(g)]
        if self.pre_transform is not None:
            graphs = [self.pre_transform(g) for g in graphs]
        self._save_graphs(graphs, self.processed_paths[0])

    @staticmethod
    def _save_graphs(graphs: list[RiverGraph], path: str) -> None:
        items = []
        for g in graphs:
            d = dict(g.to_dict())
            if "time" in d and d["time"] is not None:
                d["time"] = torch.from_numpy(
                    np.asarray(d["time"], dtype="datetime64[ns]").astype(np.int64)
                )
                d["__time_ns__"] = True
            items.append((type(g), d))
        atomic_torch_save(items, path)

    def _rebuild(self, path: str, err: Exception) -> None:
        """Re-run :meth:`process` for an unreadable processed file, from ``raw/`` (downloaded or
        copied from ``source_dir`` when absent); ``ValueError`` naming the file if impossible."""
        name = type(self).__name__
        try:
            super()._download()  # PyG: nothing to do when the raw files are there
        except (OSError, RuntimeError, ValueError) as missing:
            raise ValueError(
                f"{name}: processed file {path} is unreadable ({_short(err)}) and cannot be "
                f"rebuilt: the raw files are not available ({_short(missing)}). Restore them in "
                f"{self.raw_dir} (or pass source_dir=) and build again with force_reload=True."
            ) from err
        logger.warning(
            "%s: processed file %s is unreadable (%s); rebuilding it from %s",
            name,
            path,
            _short(err),
            self.raw_dir,
        )
        self.process()
        self._graphs = self._load_graphs(path)

    @staticmethod
    def _load_graphs(path: str) -> list[RiverGraph]:
        # Files in processed/ are written by this class: trusted, so full unpickling is fine.
        items = torch.load(path, weights_only=False)
        graphs = []
        for cls, d in items:
            d = dict(d)
            if d.pop("__time_ns__", False):
                d["time"] = d["time"].numpy().astype("datetime64[ns]")
            g = cls(validate=False)
            for key, value in d.items():
                setattr(g, key, value)
            graphs.append(g)
        return graphs

    # ------------------------------------------------------------------ access
    def len(self) -> int:
        return len(self._graphs)

    def get(self, idx: int) -> RiverGraph:
        # a shallow copy (tensors shared), so that transforms setting attributes leave the
        # stored item untouched, as in PyG's InMemoryDataset
        return copy.copy(self._graphs[idx])

    @property
    def graphs(self) -> list[RiverGraph]:
        """The processed items (without ``transform``)."""
        return self._graphs

    # ------------------------------------------------------------------ normalisation
    def attribute_stats(
        self, train_nodes: Tensor | Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of the static attributes ``x`` over training nodes only.

        ``train_nodes`` indexes the rows of the items' ``x`` concatenated in item order (for a
        single-graph dataset: node indices; for CAMELS-US: basin indices); ``None`` uses every
        node. NaNs are ignored; a zero (or undefined) standard deviation is returned as 1 so that
        ``(x - mean) / std`` is always finite. The result is cached in ``root/processed/``.

        Shapes:
            train_nodes ``[M]`` long (or bool ``[N_total]``) → mean ``[F]``, std ``[F]`` float32,
            in the units of ``x_units``.
        """
        x = torch.cat([g.x.double() for g in self._graphs], 0)
        if train_nodes is None:
            idx = torch.arange(x.size(0))
        else:
            idx = torch.as_tensor(train_nodes)
            if idx.dtype == torch.bool:
                if idx.numel() != x.size(0):
                    raise ValueError(
                        f"train_nodes mask has {idx.numel()} entries for {x.size(0)} nodes"
                    )
                idx = idx.nonzero().flatten()
            idx = idx.long().flatten()
            if idx.numel() == 0:
                raise ValueError("attribute_stats: train_nodes is empty")
            bad = idx[(idx < 0) | (idx >= x.size(0))]
            if bad.numel():
                raise ValueError(
                    f"attribute_stats: train_nodes {bad.tolist()[:20]} outside 0..{x.size(0) - 1}"
                )
        key = hashlib.sha1(np.sort(idx.numpy()).tobytes()).hexdigest()[:12]
        cache = Path(self.processed_dir) / f"attribute_stats_{self.config_hash()}_{key}.pt"
        if cache.exists() and not self.force_reload:
            try:
                stats = torch.load(cache, weights_only=True)
                return stats["mean"], stats["std"]
            except OSError:
                raise
            except _UNREADABLE as err:  # truncated or corrupt: recomputed from the items below
                logger.warning(
                    "%s: attribute statistics cache %s is unreadable (%s); recomputing it",
                    type(self).__name__,
                    cache,
                    _short(err),
                )
        mean, std = attribute_statistics(x[idx])
        atomic_torch_save({"mean": mean, "std": std, "train_nodes": idx}, cache)
        return mean, std

    def __repr__(self) -> str:
        if not self._graphs:
            return f"{type(self).__name__}()"
        g = self._graphs[0]
        t = len(g.time) if getattr(g, "time", None) is not None else 0
        return f"{type(self).__name__}({len(self)} item(s), N={g.num_nodes}, T={t})"

    @property
    def raw_dir(self) -> str:
        return osp.join(self.root, "raw")

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root, "processed")
