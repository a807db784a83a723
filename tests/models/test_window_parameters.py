"""A batch of training windows of one whole network runs the parameterizer once.

``WindowSamples`` marks its items ``whole_graph_window``; :meth:`HydroModel.parameters_of` then
computes the static parameters on one copy of the network and repeats them for every window.
Checked against the parameterizer run on each window alone (eval mode: no dropout draws).
"""

import torch
from torch_geometric.data import Batch

from gnnhydro.datasets.windows import WindowSamples
from gnnhydro.models import HydroModel
from gnnhydro.models.hydro_model import windows_of_one_graph
from gnnhydro.nn import build_parameterizer
from gnnhydro.routing import get_irf
from gnnhydro.runoff import HBV

from .test_detached_warmup import NMUL, _graph


def _model() -> HydroModel:
    torch.manual_seed(0)
    runoff = HBV(nmul=NMUL)
    specs = {**runoff.param_spec, **get_irf("muskingum").param_spec}
    parameterizer = build_parameterizer(
        "sage", in_channels=3, specs=specs, nmul=NMUL, hidden_channels=8, dropout=0.3
    )
    return HydroModel(parameterizer, runoff, "muskingum", substeps="auto")


def _spy(model: HydroModel) -> list[int]:
    """The node count of every parameterizer call."""
    seen: list[int] = []

    def hook(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["x"]).shape[0])

    model.parameterizer.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_windows_of_one_network_share_one_parameterizer_run():
    g = _graph()
    g.num_time_steps = g.forcing.shape[1]
    windows = WindowSamples(g, [(0, 30, 10), (20, 50, 10), (5, 35, 10)])
    batch = Batch.from_data_list([windows[i] for i in range(3)])
    assert windows_of_one_graph(batch) == 3
    model = _model().eval()
    seen = _spy(model)
    params, _ = model.parameters_of(batch)
    assert seen == [4]  # one copy of the 4-node network, not the 12 nodes of the batch
    alone = [model.parameters_of(windows[i])[0] for i in range(3)]
    for name, value in params.items():
        torch.testing.assert_close(value, torch.cat([p[name] for p in alone]), rtol=0, atol=0)
    # the gradient of the batch is the sum over its windows (repeat's backward)
    weights = list(model.parameterizer.parameters())
    got = torch.autograd.grad(sum(v.sum() for v in params.values()), weights)
    want = torch.autograd.grad(sum(v.sum() for p in alone for v in p.values()), weights)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_other_batches_run_the_parameterizer_on_every_node():
    g = _graph()
    other = _graph()
    other.x = torch.rand(4, 3)  # another network: no mark, no sharing
    batch = Batch.from_data_list([g, other])
    assert windows_of_one_graph(batch) == 1
    model = _model().train()
    seen = _spy(model)
    model.parameters_of(batch)
    assert seen == [8]
