"""Run-directory rules, resume configuration, atomic checkpoints and override checks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from gnnhydro.config import check_overrides, compose, default_data_root
from gnnhydro.training.checkpoint import atomic_save, best_checkpoint, load_weights
from gnnhydro.training.experiment import resolve_device
from gnnhydro.training.rundir import check_run_dir, clear_run_dir, resume_config


def _fake_run(path, **cfg):
    path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg), path / "config.yaml")
    (path / "checkpoints").mkdir(exist_ok=True)
    (path / "checkpoints" / "last.pt").write_bytes(b"x")
    return path


def test_new_run_refuses_a_non_empty_directory_and_writes_nothing(tmp_path):
    check_run_dir(tmp_path / "new", resume=False, overwrite=False)  # absent: fine
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", resume=False, overwrite=False)  # empty: fine
    run = _fake_run(tmp_path / "old", trainer={"resume": False})
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ValueError, match="not empty.*trainer.resume=true.*overwrite=true"):
        check_run_dir(run, resume=False, overwrite=False)
    check_run_dir(run, resume=False, overwrite=True)
    check_run_dir(run, resume=True, overwrite=False)
    assert sorted(p.name for p in run.rglob("*")) == before
    clear_run_dir(run)
    assert list(run.iterdir()) == []


def test_overwrite_never_removes_files_that_are_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no gnnhydro run"):
        check_run_dir(tmp_path, resume=False, overwrite=True)
    with pytest.raises(ValueError, match="no run to resume"):
        check_run_dir(tmp_path, resume=True, overwrite=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        check_run_dir(tmp_path / "file", resume=False, overwrite=False)


def test_resume_reads_the_runs_own_config(tmp_path):
    saved = compose(["dataset.num_nodes=17", "model.runoff.nmul=3", "trainer.epochs=2"])
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(saved, run / "config.yaml", resolve=True)
    # the user repeats none of the run's overrides, only extends training
    overrides = ["trainer.epochs=5", "trainer.resume=true", f"run_dir={run}"]
    composed = compose(overrides)
    cfg = resume_config(run, composed, overrides)
    assert cfg.dataset.num_nodes == 17 and cfg.model.runoff.nmul == 3  # the run's own
    assert cfg.trainer.epochs == 5 and cfg.trainer.resume is True  # the override on top
    with pytest.raises(ValueError, match="keeps the configuration"):
        resume_config(run, compose(["parameterizer=mlp"]), ["parameterizer=mlp"])
    # the same group choice as the run's is fine
    resume_config(run, compose(["parameterizer=sage"]), ["parameterizer=sage"])
    with pytest.raises(ValueError, match="no run to resume"):
        resume_config(tmp_path / "none", composed, overrides)


def test_overrides_unknown_keys_and_options_suggest_the_closest():
    with pytest.raises(ValueError, match="did you mean 'trainer.epochs'"):
        check_overrides(["+trainer.epoch=2"])
    with pytest.raises(ValueError, match="did you mean 'trainer.epochs'"):
        check_overrides(["trainer.epoch=2"])
    with pytest.raises(ValueError, match="did you mean 'seed'"):
        check_overrides(["sed=1"])
    with pytest.raises(ValueError, match="did you mean 'drb'"):
        check_overrides(["dataset=drbb"])
    with pytest.raises(ValueError, match="did you mean 'sage'"):
        check_overrides(["parameterizer=sag,mlp"])  # a sweep: every value checked
    # keys of the chosen group's config, extension keys outside the fixed sections
    check_overrides(["dataset=drb", "dataset.climate_adjustment=prms"])
    check_overrides(["+model.runoff.options.betaet=true", "trainer.epochs=3"])
    with pytest.raises(ValueError, match="dataset.num_nodes"):
        check_overrides(["dataset=drb", "dataset.num_nodes=3"])  # a synthetic key on drb


def test_devices_that_are_not_there_are_named():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not known"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


def test_atomic_save_keeps_the_last_good_file_when_killed_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # a truncated archive, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=False)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_checkpoint_that_does_not_fit_names_the_file(tmp_path):
    atomic_save({"model": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "best.pt")
    with pytest.raises(ValueError, match="best.pt does not fit the model"):
        load_weights(torch.nn.Linear(4, 2), tmp_path / "best.pt")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="bad.pt cannot be read"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        best_checkpoint(tmp_path / "nothing")


def test_default_data_root_is_outside_the_package(monkeypatch, tmp_path):
    import gnnhydro

    monkeypatch.setenv("GNNHYDRO_DATA_ROOT", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"
    assert compose().data_root == str(tmp_path / "d")
    monkeypatch.delenv("GNNHYDRO_DATA_ROOT")
    package = gnnhydro.__file__.rsplit("/", 2)[0]
    assert not str(default_data_root()).startswith(package)
    assert default_data_root().name == "gnnhydro"
