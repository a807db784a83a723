"""Fixtures of the dataset tests: real datasets processed once per session into temp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest


def _subdir(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not found at {path}")
    return path


@pytest.fixture(scope="session")
def drb_dir(shared_data: Path) -> Path:
    return _subdir(shared_data, "drb_2yr")


@pytest.fixture(scope="session")
def nwm_dir(shared_data: Path) -> Path:
    return _subdir(shared_data, "lower_colorado_tx")


@pytest.fixture(scope="session")
def camels_dir(shared_data: Path) -> Path:
    return _subdir(shared_data, "camels_us")


@pytest.fixture(scope="session")
def drb(drb_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from gnnhydro.datasets import DelawareRiverBasin

    return DelawareRiverBasin(tmp_path_factory.mktemp("drb"), source_dir=drb_dir)


@pytest.fixture(scope="session")
def nwm(nwm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from gnnhydro.datasets import NWMDomain

    return NWMDomain(tmp_path_factory.mktemp("nwm"), source_dir=nwm_dir)
