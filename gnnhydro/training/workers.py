"""Warm processes for many training runs (``gnnhydro cv``): each imports gnnhydro once and
forks a fresh child per run.

A new ``python -m gnnhydro train`` process spends ~8 s on 2 cores importing torch, PyG and
numba before its first step, and ~2 s tearing down after its last; a cross-validation pays that
for every fold run.  A :class:`WarmWorker` is one such process, started with the runs'
environment (thread counts), that imports the training stack once and then, per request, forks a
child that runs ``gnnhydro <argv>`` with its output in the run's log file and exits.  Each run
still has a process of its own (fresh memory, seeds, hydra state, a crash stays in it); only
the imports are shared.  The worker itself runs no torch or numba code, so no thread pool exists
when it forks (as for torch's own fork-based ``DataLoader`` workers).

Where ``os.fork`` is not safe to use (not Linux), :class:`ColdRun` starts a new process per run
with the same interface.

Protocol (one JSON object per line): the parent writes ``{"argv": [...], "log": PATH}`` to the
worker's stdin; the worker answers ``{"exit": CODE}`` on its stdout when the child has ended
(``CODE`` as :func:`os.waitstatus_to_exitcode`: negative for a signal).  End of stdin ends it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["WarmWorker", "ColdRun", "new_slot", "warm_workers_supported", "serve"]

#: what a worker imports before it forks its first run (the cost a run no longer pays)
PRELOAD = (
    "gnnhydro.cli",
    "gnnhydro.training.trainer",
    "gnnhydro.training.experiment",
    "gnnhydro.training.outputs",
    "gnnhydro.models",
    "gnnhydro.routing",
    "gnnhydro.runoff.kernels.hbv_numba",
)


def warm_workers_supported() -> bool:
    """Whether runs can be forked from a warm worker (Linux: ``fork`` after importing torch, as
    torch's ``DataLoader`` does; macOS' system libraries are not fork-safe)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class WarmWorker:
    """A warm process that runs one ``gnnhydro`` command at a time in a forked child.

    ``env``: the worker's (and so every run's) environment; ``NUMBA_NUM_THREADS`` and
    ``OMP_NUM_THREADS`` take effect because the worker imports numba and torch itself.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gnnhydro.training.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env),
            text=True,
        )
        self.busy = False

    def submit(self, argv: list[str], log_path: Path) -> None:
        """Start ``gnnhydro <argv>`` with stdout and stderr in ``log_path``."""
        if self.busy:
            raise RuntimeError("the worker is running a command already")
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"argv": list(argv), "log": str(log_path)}) + "\n")
        self._proc.stdin.flush()
        self.busy = True

    def poll(self) -> int | None:
        """The exit code of the running command once it has ended, else ``None``."""
        if not self.busy:
            return None
        out = self._proc.stdout
        assert out is not None
        if not select.select([out], [], [], 0)[0]:
            return None
        line = out.readline()
        self.busy = False
        if not line:  # the worker itself died
            return self._proc.wait() or 1
        return int(json.loads(line)["exit"])

    def close(self, wait: bool = True) -> None:
        """End the worker: it finishes a running command first (``wait``: until it has)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        if wait:
            self._proc.wait()


class ColdRun:
    """:class:`WarmWorker`'s interface over a new ``python -m gnnhydro`` process per command."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._proc: subprocess.Popen | None = None
        self._log: IO[str] | None = None
        self.busy = False

    def submit(self, argv: list[str], log_path: Path) -> None:
        self._log = Path(log_path).open("w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gnnhydro", *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
        )
        self.busy = True

    def poll(self) -> int | None:
        if not self.busy or self._proc is None or self._proc.poll() is None:
            return None
        assert self._log is not None
        self._log.close()
        self.busy = False
        return int(self._proc.returncode)

    def close(self, wait: bool = True) -> None:
        if self._proc is not None and wait:
            self._proc.wait()
        if self._log is not None:
            self._log.close()


def new_slot(env: Mapping[str, str]) -> WarmWorker | ColdRun:
    """A slot for one command at a time: a :class:`WarmWorker` where supported, else a
    :class:`ColdRun`."""
    return WarmWorker(env) if warm_workers_supported() else ColdRun(env)


def _run_forked(argv: list[str], log_path: str) -> int:
    """Fork a child that runs ``gnnhydro <argv>`` into ``log_path``; its exit code."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            # streams of their own on the log (the worker's may be anything, e.g. pytest's
            # capture); stderr line-buffered, as a process's is
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            code = _main(argv)
        except BaseException:  # as an uncaught exception of a process: its traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _main(argv: list[str]) -> int:
    """``gnnhydro <argv>`` in this process, its exit code (``SystemExit`` included)."""
    import signal

    from gnnhydro.cli import main

    # Ctrl-C reaches the run as in a process of its own, whatever the worker inherited
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(main(argv) or 0)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(stop.code, file=sys.stderr)
        return 1


def serve(requests: IO[str] = sys.stdin, answers: IO[str] = sys.stdout) -> None:
    """The worker's loop: import :data:`PRELOAD`, then run each request in a forked child."""
    import importlib
    import signal

    # Ctrl-C is the runs' (each child takes it back) and the parent's, which then closes stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        importlib.import_module(name)
    for line in requests:
        if not line.strip():
            continue
        request: dict[str, Any] = json.loads(line)
        code = _run_forked(list(request["argv"]), str(request["log"]))
        answers.write(json.dumps({"exit": code}) + "\n")
        answers.flush()


if __name__ == "__main__":  # pragma: no cover - run as the worker process
    serve()
