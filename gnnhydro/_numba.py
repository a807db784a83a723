"""Shared numba set-up of the CPU kernels: where compiled kernels are cached, a one-line message
when a kernel is compiled for the first time, and a thread pool running serial (``nogil``)
kernels over chunks of their outer loop.

* :func:`njit` is ``numba.njit`` with an on-disk cache in :func:`cache_dir` (instead of numba's
  own choice), and, with ``kernel="HBV"``, a message the first time that kernel family is
  compiled for a dtype in this process.
* How the kernels' helpers (``njit(forceinline=True)``: primitives and model steps) are inlined
  into the kernels, the one switch being ``$GNNHYDRO_NUMBA_INLINE`` (read once, at import,
  into :data:`INLINE`): ``llvm`` (default) compiles each helper once and lets LLVM inline it
  (``alwaysinline``); ``numba`` uses numba's IR inlining (``inline="always"``: the helper is
  re-typed and re-lowered inside every caller and dtype), kept to measure the difference
  (``gnnhydro bench compile --inline both``).  The mode is not part of numba's cache key: a
  cache filled in one mode serves the other, so measure each mode with an empty cache.
* :func:`cache_dir`: ``$NUMBA_CACHE_DIR`` when set (numba's layout), else the ``__pycache__``
  next to the source file when writable (numba's default: development installs), else the
  user's cache directory (``~/.cache/gnnhydro/numba`` on Linux: wheels in a read-only
  site-packages), else a per-user temporary directory; ``None`` (no caching) when none is
  writable.  Compiled code is loaded from there by later processes in milliseconds.
* :func:`run_chunks` runs ``kernel(start, stop, *args)`` over ``range(n)`` split in contiguous
  chunks on :func:`thread_pool` (static schedule, as ``prange``): the kernels compile without
  numba's parallel pipeline (which cost most of their compile time) and idle pool threads
  sleep instead of spinning.  The thread count is numba's (``NUMBA_NUM_THREADS``,
  ``numba.set_num_threads``).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numba
from numba.core import event

__all__ = [
    "njit",
    "INLINE",
    "INLINE_ENV",
    "INLINE_MODES",
    "inline_mode",
    "cache_dir",
    "user_cache_dir",
    "cache_stats",
    "cache_path",
    "run_chunks",
    "num_threads",
    "thread_pool",
]

LOGGER = logging.getLogger("gnnhydro")

#: every dispatcher made by :func:`njit` (for :func:`cache_stats`)
_DISPATCHERS: list = []
#: kernel families announced on first compilation: dispatcher -> label
_LABELS: dict[int, str] = {}
_ANNOUNCED: set[tuple[str, str]] = set()


# ------------------------------------------------------------------------------ cache directory
def user_cache_dir() -> Path:
    """The user's cache directory for compiled kernels (``…/gnnhydro/numba``).

    ``platformdirs`` when installed, else numba's vendored ``appdirs`` (``$XDG_CACHE_HOME`` or
    ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows).
    """
    try:
        from platformdirs import user_cache_dir as _ucd

        base = _ucd("gnnhydro", appauthor=False)
    except ImportError:
        try:
            from numba.misc.appdirs import AppDirs

            base = AppDirs("gnnhydro", appauthor=False).user_cache_dir
        except ImportError:  # pragma: no cover
            base = os.path.join(os.path.expanduser("~"), ".cache", "gnnhydro")
    return Path(base) / "numba"


def _writable(path: Path) -> bool:
    """Whether ``path`` exists or can be made, and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _subpath(py_file: str) -> str:
    """numba's sub-directory for a source file in a shared cache (``parent_sha1(dir)``)."""
    from numba.core.caching import _CacheLocator

    return _CacheLocator.get_suitable_cache_subpath(py_file)


def cache_dir(py_file: str | os.PathLike, *, environ=None) -> Path | None:
    """The directory compiled kernels of ``py_file`` are cached in (created), or ``None``.

    The first writable of: ``$NUMBA_CACHE_DIR/<sub>`` (the user's choice, numba's layout), the
    ``__pycache__`` next to ``py_file`` (numba's default), ``user_cache_dir()/<sub>``, and
    ``<tempdir>/gnnhydro-numba-<uid>/<sub>``.
    """
    env = os.environ if environ is None else environ
    py_file = os.path.abspath(os.fspath(py_file))
    sub = _subpath(py_file)
    candidates = []
    if env.get("NUMBA_CACHE_DIR"):
        candidates.append(Path(env["NUMBA_CACHE_DIR"]) / sub)
    candidates.append(Path(py_file).parent / "__pycache__")
    candidates.append(user_cache_dir() / sub)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"gnnhydro-numba-{uid}" / sub)
    for path in candidates:
        if _writable(path):
            return path
    return None


def _function_cache_class():
    """A numba ``FunctionCache`` whose locator is :func:`cache_dir`."""
    from numba.core.caching import (
        CompileResultCacheImpl,
        FunctionCache,
        _CacheLocator,
        _SourceFileBackedLocatorMixin,
    )

    class _Locator(_SourceFileBackedLocatorMixin, _CacheLocator):
        def __init__(self, py_func, py_file, path):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = str(path)

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.exists(py_file):
                return None
            path = cache_dir(py_file)
            return None if path is None else cls(py_func, py_file, path)

    class _Impl(CompileResultCacheImpl):
        _locator_classes = [_Locator]

    class _Cache(FunctionCache):
        _impl_class = _Impl

    return _Cache


_CACHE_CLASS = None


def _enable_cache(disp) -> None:
    global _CACHE_CLASS
    try:
        if _CACHE_CLASS is None:
            _CACHE_CLASS = _function_cache_class()
        disp._cache = _CACHE_CLASS(disp.py_func)
    except RuntimeError:  # no writable directory at all: compile in every process
        LOGGER.debug("numba cache off for %s: no writable cache directory", disp.py_func)
    except (ImportError, AttributeError):  # pragma: no cover - numba internals changed
        try:
            disp.enable_caching()
        except RuntimeError:
            pass


def cache_path(disp) -> str | None:
    """The directory ``disp`` (a dispatcher made by :func:`njit`) is cached in, or ``None``."""
    path = getattr(getattr(disp, "_cache", None), "cache_path", None)
    return str(path) if path else None


try:
    from numba.core.cpu import CPUTargetOptions

    _HAS_FORCEINLINE = hasattr(CPUTargetOptions, "forceinline")
except ImportError:  # pragma: no cover
    _HAS_FORCEINLINE = False


#: environment variable choosing how ``forceinline=True`` helpers are inlined
INLINE_ENV = "GNNHYDRO_NUMBA_INLINE"
#: its values: LLVM ``alwaysinline`` of helpers compiled once (default), numba-IR inlining
INLINE_MODES = ("llvm", "numba")


def inline_mode(environ=None) -> str:
    """The inlining mode named by ``$GNNHYDRO_NUMBA_INLINE`` (``"llvm"`` when unset or empty).

    Raises ``ValueError`` (one line) for any other value.
    """
    env = os.environ if environ is None else environ
    mode = env.get(INLINE_ENV, "").strip().lower() or INLINE_MODES[0]
    if mode not in INLINE_MODES:
        raise ValueError(
            f"{INLINE_ENV}={env.get(INLINE_ENV)!r}: expected one of {', '.join(INLINE_MODES)}"
        )
    return mode


#: how the helpers of the kernels are inlined in this process (:func:`inline_mode` at import)
INLINE = inline_mode()


def njit(fn: Callable | None = None, *, kernel: str | None = None, **options):
    """``numba.njit(**options)`` cached in :func:`cache_dir`; with ``kernel`` (a family name
    such as ``"HBV"``) a one-line message is logged (logger ``gnnhydro``, INFO; stderr when
    logging is not configured) the first time the family is compiled for a dtype.

    ``forceinline=True`` (a helper inlined into its callers) means LLVM inlining of a function
    compiled once, or numba's ``inline="always"`` when :data:`INLINE` is ``"numba"``.
    """
    options.pop("cache", None)
    if options.get("forceinline"):
        if INLINE == "numba":
            options.pop("forceinline")
            options["inline"] = "always"
        elif not _HAS_FORCEINLINE:  # pragma: no cover - old numba
            options.pop("forceinline")

    def deco(f: Callable):
        disp = numba.njit(**options)(f)
        _enable_cache(disp)
        _DISPATCHERS.append(disp)
        if kernel is not None:
            _LABELS[id(disp)] = kernel
        return disp

    return deco(fn) if fn is not None else deco


def cache_stats() -> dict[str, int]:
    """Disk-cache ``hits`` (loaded) and ``misses`` (compiled) of every function made by
    :func:`njit` so far in this process (kernels and the functions they call)."""
    hits = misses = 0
    for d in _DISPATCHERS:
        hits += sum(d._cache_hits.values())
        misses += sum(d._cache_misses.values())
    return {"hits": hits, "misses": misses}


# ------------------------------------------------------------------- first-compilation message
def _dtype_label(args) -> str:
    dts = {str(a.dtype) for a in args if isinstance(a, numba.types.Array)}
    floats = sorted(d for d in dts if d.startswith("float"))
    return "float32" if "float32" in floats else (floats[-1] if floats else "any dtype")


def _announce(message: str) -> None:
    if LOGGER.hasHandlers():
        LOGGER.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


class _CompileListener(event.Listener):
    """Announces the first compilation of a kernel family per dtype (``numba:compile`` fires
    only on a real compilation, never on a cache hit)."""

    def on_start(self, ev) -> None:
        disp = ev.data.get("dispatcher")
        label = _LABELS.get(id(disp))
        if label is None:
            return
        key = (label, _dtype_label(ev.data.get("args", ())))
        if key in _ANNOUNCED:
            return
        _ANNOUNCED.add(key)
        where = cache_path(disp)
        tail = f"cached in {where}" if where else "not cached (no writable cache directory)"
        _announce(f"gnnhydro: compiling the {label} numba kernels ({key[1]}) once; {tail}")

    def on_end(self, ev) -> None:
        pass


event.register("numba:compile", _CompileListener())


# ------------------------------------------------------------------------------- thread pool
_POOL = None
_POOL_LOCK = threading.Lock()


def thread_pool():
    """The shared thread pool of the CPU kernels (``os.cpu_count()`` workers, made on first use).

    Unlike a ``prange`` region, idle pool threads sleep instead of spinning, so they never
    compete with torch's threads (or the caller) for the cores between calls.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(
                max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="gnnhydro-kernels"
            )
    return _POOL


def num_threads() -> int:
    """numba's thread count: ``numba.get_num_threads()`` once numba's threading layer runs,
    else ``NUMBA_NUM_THREADS`` (default: the CPU count), without starting that layer."""
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return int(numba.get_num_threads())
    return int(numba.config.NUMBA_NUM_THREADS)


def run_chunks(kernel: Callable, n: int, *args, threads: int | None = None) -> None:
    """``kernel(start, stop, *args)`` over ``range(n)`` in ``threads`` (default
    :func:`num_threads`) contiguous chunks of equal size, in parallel (the kernel must release
    the GIL and write disjoint rows per index); the caller runs the first chunk."""
    k = max(1, min(threads or num_threads(), n, (os.cpu_count() or 1) + 1))
    if k == 1:
        kernel(0, n, *args)
        return
    bounds = [n * i // k for i in range(k + 1)]
    pool = thread_pool()
    futures = [pool.submit(kernel, bounds[i], bounds[i + 1], *args) for i in range(1, k)]
    try:
        kernel(bounds[0], bounds[1], *args)
    finally:
        for f in futures:
            f.result()
