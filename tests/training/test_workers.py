"""Warm worker processes of ``gnnhydro cv`` (:mod:`gnnhydro.training.workers`)."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest

import gnnhydro
from gnnhydro.training import workers
from gnnhydro.training.workers import ColdRun, WarmWorker, serve, warm_workers_supported

needs_fork = pytest.mark.skipif(not warm_workers_supported(), reason="warm workers need Linux")


@needs_fork
def test_serve_runs_each_request_in_a_child_with_its_own_log_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "PRELOAD", ())  # the test process has imported them already
    logs = [tmp_path / f"run{i}.log" for i in range(3)]
    requests = [
        {"argv": ["--version"], "log": str(logs[0])},
        {"argv": ["train", "trainer.no_such_option=1"], "log": str(logs[1])},
        {"argv": ["no_such_command"], "log": str(logs[2])},
    ]
    answers = io.StringIO()
    before = signal.getsignal(signal.SIGINT)
    try:
        serve(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), answers)
    finally:
        signal.signal(signal.SIGINT, before)
    codes = [json.loads(line)["exit"] for line in answers.getvalue().splitlines()]
    # a bad override is the CLI's one-line error and exit 2, from inside the child, as from a
    # process of its own (the SystemExit of the CLI is the child's exit code)
    assert codes == [0, 2, 2]
    assert logs[0].read_text().strip() == f"gnnhydro {gnnhydro.__version__}"
    assert "no_such_option" in logs[1].read_text()
    assert "unknown command 'no_such_command'" in logs[2].read_text()


@needs_fork
def test_a_child_that_dies_of_a_signal_reports_it(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "_main", lambda argv: os.kill(os.getpid(), signal.SIGKILL))
    assert workers._run_forked(["--version"], str(tmp_path / "log")) == -signal.SIGKILL


def test_the_child_takes_ctrl_c_back(monkeypatch):
    """The worker ignores SIGINT (the parent ends it); a run must see Ctrl-C as a process of its
    own does, or it would not write its checkpoint and stop."""
    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert workers._main(["--version"]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def _finish(slot, timeout: float = 120.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        code = slot.poll()
        if code is not None:
            return code
        time.sleep(0.1)
    raise AssertionError("the run did not end")


@pytest.mark.slow
@pytest.mark.parametrize("slot_type", [WarmWorker, ColdRun])
def test_a_slot_runs_commands_one_after_the_other(tmp_path, slot_type):
    if slot_type is WarmWorker and not warm_workers_supported():
        pytest.skip("warm workers need Linux")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    slot = slot_type(env)
    try:
        slot.submit(["--version"], tmp_path / "a.log")
        assert slot.busy and _finish(slot) == 0 and not slot.busy
        slot.submit(["train", "trainer.no_such_option=1"], tmp_path / "b.log")
        assert _finish(slot) == 2
    finally:
        slot.close()
    assert (tmp_path / "a.log").read_text().strip() == f"gnnhydro {gnnhydro.__version__}"
    assert "no_such_option" in (tmp_path / "b.log").read_text()
