import pytest
import torch

from gnnhydro.graph import CatchmentInterpolation, RiverGraph, UnknownIdError


def _graph():
    return RiverGraph.from_edges(["r1", "r2", "r3"], downstream=["r3", "r3", None])


def test_mean_and_sum_by_hand():
    g = _graph()
    # units: u0 (10 km²) -> r1, u1 (30 km²) -> r1, u2 (5 km²) -> r2, u3 unmapped (0)
    interp = CatchmentInterpolation.from_mapping(g, ["r1", "r1", "r2", 0], [10.0, 30.0, 5.0, 7.0])
    assert interp.unmapped_units == [3]
    assert torch.allclose(interp.reach_area_km2, torch.tensor([40.0, 5.0, 0.0]))
    depth = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [100.0, 100.0]])  # mm, [U, T]
    mean = interp.mean(depth)
    assert torch.allclose(mean, torch.tensor([[2.5, 3.5], [5.0, 6.0], [0.0, 0.0]]))
    volume = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.allclose(interp.sum(volume), torch.tensor([3.0, 3.0, 0.0]))
    # volume is conserved for mapped units: sum over reaches == sum over mapped units
    assert interp.sum(volume).sum() == pytest.approx(6.0)


def test_overlap_weights_split_a_cell_and_are_differentiable():
    g = _graph()
    interp = CatchmentInterpolation.from_weights(
        g, ["r1", "r2", "r2"], [0, 0, 1], [2.0, 6.0, 4.0], num_units=2
    )
    cell = torch.tensor([8.0, 2.0], requires_grad=True)  # m³ per cell
    out = interp.sum(cell)
    assert torch.allclose(out, torch.tensor([2.0, 8.0, 0.0]))
    out.sum().backward()
    assert torch.allclose(cell.grad, torch.ones(2))
    # batch dimension
    batch = torch.ones(3, 2, 5)
    assert interp.mean(batch, dim=1).shape == (3, 3, 5)


def test_unknown_reach_ids_are_named():
    with pytest.raises(UnknownIdError, match="r9"):
        CatchmentInterpolation.from_mapping(_graph(), ["r1", "r9"], [1.0, 1.0])
