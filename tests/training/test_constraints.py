"""Multi-variable constraints: config parsing, the masked per-variable loss against a hand
computation, what may train (held-out areas never), errors naming what is missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gnnhydro.graph import RiverGraph
from gnnhydro.training.constraints import (
    build_constraints,
    check_constraints,
    constraint_loss,
    observed_variables,
)
from tests.tiny import gnnhydro, tiny_run


def _graph(T=30, seed=0):
    g = RiverGraph.from_edges([1, 2, 3, 4], [3, 3, 4, 0])
    gen = torch.Generator().manual_seed(seed)
    g.obs_evapotranspiration = torch.rand(4, T, generator=gen, dtype=torch.float64) * 3
    g.obs_evapotranspiration[1] = float("nan")  # node 2 unobserved
    g.obs_evapotranspiration[0, 5:9] = float("nan")
    g.constraint_train_mask = torch.tensor([True, True, True, False])  # node 4 held out
    return g


def test_build_constraints_from_config():
    cs = build_constraints(
        OmegaConf.to_container(
            OmegaConf.create({"evapotranspiration": 0.5, "snowpack": {"weight": 2, "loss": "kge"}})
        )
    )
    assert [(c.variable, c.weight, type(c.loss).__name__) for c in cs] == [
        ("evapotranspiration", 0.5, "NSELoss"),
        ("snowpack", 2.0, "KGELoss"),
    ]
    assert build_constraints(None) == [] and build_constraints({}) == []
    with pytest.raises(ValueError, match=r"snowpack: unknown key\(s\) \['wieght'\]"):
        build_constraints({"snowpack": {"wieght": 1}})
    with pytest.raises(ValueError, match="weight must be >= 0"):
        build_constraints({"snowpack": -1})


def test_loss_uses_observed_training_nodes_only():
    g = _graph()
    sim = torch.rand(4, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (c,) = build_constraints({"evapotranspiration": 0.5})
    got = constraint_loss([c], {"fluxes": {"evapotranspiration": sim}}, g, warmup=2)
    # by hand: NSE* (eps 0.1, batch spread) at nodes 1 and 3 (node 2 unobserved, 4 held out)
    ref = []
    for i in (0, 2):
        o, s = g.obs_evapotranspiration[i, 2:].numpy(), sim[i, 2:].numpy()
        m = np.isfinite(o)
        ref.append(np.mean((s[m] - o[m]) ** 2) / (o[m].std() + 0.1) ** 2)
    assert got.item() == pytest.approx(0.5 * np.mean(ref), rel=1e-12)
    # the held-out node's observations never matter
    g.obs_evapotranspiration[3] = 1e6
    again = constraint_loss([c], {"fluxes": {"evapotranspiration": sim}}, g, warmup=2)
    assert again.item() == got.item()
    # nothing observed at a training node: zero, still a tensor
    g.obs_evapotranspiration[:3] = float("nan")
    none = constraint_loss([c], {"fluxes": {"evapotranspiration": sim}}, g, warmup=2)
    assert none.item() == 0.0


def test_errors_name_what_is_missing():
    g = _graph()
    assert observed_variables(g) == ["evapotranspiration"]
    cfg = OmegaConf.create(
        {"model": {"mode": "full", "runoff": {"name": "hbv"}}, "trainer": {"sampler": "windows"}}
    )
    with pytest.raises(
        ValueError, match=r"no \['obs_snowpack'\]; observed variables: \['obs_evapo"
    ):
        check_constraints(build_constraints({"snowpack": 1}), g, cfg)
    routing = OmegaConf.create({"model": {"mode": "routing", "runoff": None}, "trainer": {}})
    with pytest.raises(ValueError, match="routing-only model simulates no fluxes"):
        check_constraints(build_constraints({"evapotranspiration": 1}), g, routing)
    basins = OmegaConf.merge(cfg, {"trainer": {"sampler": "gauge_basins"}})
    with pytest.raises(ValueError, match="need trainer.sampler=windows"):
        check_constraints(build_constraints({"evapotranspiration": 1}), g, basins)
    (c,) = build_constraints({"evapotranspiration": 1})
    with pytest.raises(ValueError, match=r"outputs no 'evapotranspiration'; it has \['runoff'\]"):
        constraint_loss([c], {"fluxes": {"runoff": torch.zeros(4, 30)}}, g, 0)


def test_synthetic_observations_and_their_errors():
    from gnnhydro.datasets.synthetic import generate_synthetic_basin

    base = generate_synthetic_basin(seed=1, num_nodes=20, years=2)
    g = generate_synthetic_basin(seed=1, num_nodes=20, years=2, observed_variables=["swe"])
    assert observed_variables(g) == ["swe"] and g.obs_swe.shape == g.q_obs.shape
    torch.testing.assert_close(g.q_obs, base.q_obs, equal_nan=True)  # other draws unchanged
    assert (g.obs_swe >= 0).all() and g.obs_swe.max() > 10
    with pytest.raises(ValueError, match=r"\['bogus'\] are not HBV outputs"):
        generate_synthetic_basin(seed=1, num_nodes=20, years=2, observed_variables=["bogus"])


TINY = tiny_run(40, "trainer.epochs=1")


@pytest.mark.slow
def test_cli_trains_with_an_observed_flux_and_reports_its_metrics(tmp_path):
    import pandas as pd

    run_dir = tmp_path / "run"
    args = ["train", f"run_dir={run_dir}", f"dataset.root={tmp_path}/synthetic"]
    args += ["dataset.observed_variables=[evapotranspiration]"]
    result = gnnhydro(*args, "trainer.constraints={evapotranspiration: 0.5}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(run_dir / "metrics.csv", dtype={"gauge_id": str})
    et = metrics[metrics["variable"] == "evapotranspiration"]
    assert {"train", "test", "train_ungauged", "test_ungauged"} <= set(et["split"])
    assert len(et[et["split"] == "test"]) + len(et[et["split"] == "test_ungauged"]) == 40
    assert et["nse"].notna().all()
    summary = pd.read_csv(run_dir / "metrics_summary.csv", index_col="split")
    gauges = metrics[metrics["variable"] == "discharge"]
    assert summary.loc["test", "n_gauges"] == (gauges["split"] == "test").sum()  # discharge only
    # a constraint on a variable the data do not observe stops the run with exit status 2
    bad = ["train", f"run_dir={tmp_path}/bad", f"dataset.root={tmp_path}/synthetic"]
    result = gnnhydro(*bad, "trainer.constraints={snowpack: 1}", *TINY)
    assert result.returncode == 2 and "obs_snowpack" in result.stderr
