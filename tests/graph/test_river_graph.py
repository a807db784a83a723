import networkx as nx
import pandas as pd
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import MessagePassing

from gnnhydro import RiverGraph
from gnnhydro.graph import (
    CycleError,
    DuplicateIdError,
    EmptyNetworkError,
    InvalidAttributeError,
    SelfLoopError,
    SplitFractionError,
    UnknownDownstreamError,
    UnknownIdError,
)


def test_from_networkx_node_order_and_edges():
    G = nx.DiGraph()
    G.add_nodes_from([30, 10, 20])
    G.add_edges_from([(10, 30), (20, 30)])
    g = RiverGraph.from_networkx(G)
    assert g.node_id == [30, 10, 20]
    assert g.num_nodes == 3
    assert sorted(g.edge_index.t().tolist()) == [[1, 0], [2, 0]]
    assert torch.equal(g.edge_weight, torch.ones(2))


def test_from_dataframe_outlet_markers_and_row_order():
    df = pd.DataFrame(
        {
            "id": [5, 6, 7, 8, 9],
            "downstream_id": [7, 7, 0, float("nan"), -1],
            "area": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    g = RiverGraph.from_dataframe(df, area_col="area")
    assert g.node_id == [5, 6, 7, 8, 9]
    assert sorted(g.edge_index.t().tolist()) == [[0, 2], [1, 2]]
    assert sorted(g.outlets.tolist()) == [2, 3, 4]
    assert torch.allclose(g.area_km2, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_marker_that_is_an_id_is_an_id():
    df = pd.DataFrame({"id": [0, 1], "downstream_id": [None, 0]})
    g = RiverGraph.from_dataframe(df)
    assert g.edge_index.t().tolist() == [[1, 0]]


def test_string_ids_and_lookup():
    df = pd.DataFrame({"id": ["up", "down"], "downstream_id": ["down", ""]})
    g = RiverGraph.from_dataframe(df)
    assert g.index_of(["down", "up"]).tolist() == [1, 0]
    assert int(g.index_of("up")) == 0
    with pytest.raises(UnknownIdError, match="nope"):
        g.index_of(["nope"])


@pytest.mark.parametrize(
    "table,error,names",
    [
        ({"id": [1, 2, 3], "downstream_id": [2, 3, 1]}, CycleError, ["1", "2", "3"]),
        ({"id": [1, 2, 2], "downstream_id": [2, None, None]}, DuplicateIdError, ["2"]),
        ({"id": [1, 2], "downstream_id": [77, None]}, UnknownDownstreamError, ["77"]),
        ({"id": [1, 2], "downstream_id": [1, None]}, SelfLoopError, ["1"]),
        ({"id": [], "downstream_id": []}, EmptyNetworkError, []),
    ],
)
def test_invalid_networks_name_the_ids(table, error, names):
    with pytest.raises(error) as info:
        RiverGraph.from_dataframe(pd.DataFrame(table))
    assert isinstance(info.value, ValueError)
    for name in names:
        assert name in str(info.value)


def test_cycle_in_larger_network_names_only_cycle_ids():
    df = pd.DataFrame({"id": [10, 11, 12, 13, 14], "downstream_id": [11, 12, 13, 11, None]})
    with pytest.raises(CycleError) as info:
        RiverGraph.from_dataframe(df)
    msg = str(info.value)
    assert "11" in msg and "12" in msg and "13" in msg and "10 ->" not in msg


def test_unknown_downstream_as_outlet_when_asked():
    df = pd.DataFrame({"id": [1, 2], "downstream_id": [99, None]})
    g = RiverGraph.from_dataframe(df, unknown_downstream="outlet")
    assert g.edge_index.size(1) == 0


def test_bad_areas_and_split_fractions():
    with pytest.raises(InvalidAttributeError, match="'b'"):
        RiverGraph.from_dataframe(
            pd.DataFrame({"id": ["a", "b"], "downstream_id": ["b", None], "A": [1.0, -2.0]}),
            area_col="A",
        )
    with pytest.raises(InvalidAttributeError, match="'a'"):
        RiverGraph.from_dataframe(
            pd.DataFrame(
                {"id": ["a", "b"], "downstream_id": ["b", None], "A": [float("nan"), 2.0]}
            ),
            area_col="A",
        )
    with pytest.raises(SplitFractionError, match="0"):
        RiverGraph.from_edges([0, 1, 2], edges=[(0, 1), (0, 2)], weights=[0.5, 0.4])
    with pytest.raises(SplitFractionError, match="0"):
        RiverGraph.from_edges([0, 1, 2], edges=[(0, 1), (0, 2)])  # no fractions given


def test_networkx_round_trip():
    G = nx.DiGraph()
    G.add_edge("a", "b", weight=0.25)
    G.add_edge("a", "c", weight=0.75)
    G.add_edge("b", "d", weight=1.0)
    G.add_edge("c", "d", weight=1.0)
    g = RiverGraph.from_networkx(G)
    H = g.to_networkx()
    assert set(H.edges) == set(G.edges)
    assert H["a"]["c"]["weight"] == pytest.approx(0.75)


def test_geodataframe_round_trip_keeps_geometry_and_crs():
    import geopandas as gpd
    from shapely.geometry import LineString

    gdf = gpd.GeoDataFrame(
        {"id": [1, 2], "downstream_id": [2, None], "area_km2": [3.0, 4.0]},
        geometry=[LineString([(0, 0), (1, 1)]), LineString([(1, 1), (2, 1)])],
        crs="EPSG:4326",
    )
    g = RiverGraph.from_dataframe(gdf, area_col="area_km2")
    out = g.to_geodataframe(columns={"k": torch.tensor([1.5, 2.5])})
    assert out.crs.to_epsg() == 4326
    assert out.geometry.iloc[1].equals(gdf.geometry.iloc[1])
    assert out["downstream_id"].tolist() == [2, None]
    assert out["k"].tolist() == [1.5, 2.5]


def test_batching_offsets_and_message_passing_sums_inflows():
    g1 = RiverGraph.from_edges([1, 2, 3], downstream=[3, 3, None], gauge_index=torch.tensor([2]))
    g2 = RiverGraph.from_edges(["a", "b"], downstream=["b", None], gauge_index=torch.tensor([1]))
    batch = Batch.from_data_list([g1, g2])
    assert batch.edge_index.t().tolist() == [[0, 2], [1, 2], [3, 4]]
    assert batch.gauge_index.tolist() == [2, 4]
    loader = DataLoader([g1, g2], batch_size=2)
    b = next(iter(loader))
    assert b.num_nodes == 5

    class Inflow(MessagePassing):
        def __init__(self):
            super().__init__(aggr="add")

        def forward(self, x, edge_index, edge_weight):
            return self.propagate(edge_index, x=x, edge_weight=edge_weight)

        def message(self, x_j, edge_weight):
            return x_j * edge_weight.unsqueeze(-1)

    q = torch.tensor([[1.0], [2.0], [0.0], [5.0], [0.0]])
    inflow = Inflow()(q, b.edge_index, b.edge_weight)
    assert inflow.flatten().tolist() == [0.0, 0.0, 3.0, 0.0, 5.0]


def test_topology_cache_invalidated_when_edges_change():
    g = RiverGraph.from_edges([0, 1, 2], downstream=[1, 2, None])
    assert g.topo_level.tolist() == [0, 1, 2]
    g.edge_index = torch.tensor([[0, 1], [2, 2]])
    assert g.topo_level.tolist() == [0, 0, 1]


def test_subgraph_nodes_keeps_ids_and_attributes():
    g = RiverGraph.from_edges(
        [1, 2, 3, 4], downstream=[2, 3, 4, None], area_km2=[1.0, 2.0, 3.0, 4.0]
    )
    sub = g.subgraph_nodes(torch.tensor([1, 2]))
    assert sub.node_id == [2, 3]
    assert sub.edge_index.tolist() == [[0], [1]]
    assert sub.area_km2.tolist() == [2.0, 3.0]
