"""Tests of ``mmssl_pyg/data/graph.py`` that the model and evaluator tests do not make
(those exercise the adjacencies and row layouts on real graphs)."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

from mmssl_pyg.data import RecGraph
from mmssl_pyg.data.graph import (
    EDGE,
    bipartite_adjacency,
    csr_rowptr,
    csr_rows,
    modality_features,
    unique_edges,
)


def _graph(features: dict) -> RecGraph:
    # 3 users, 4 items; 5 training pairs, 2 validation, 1 test
    return RecGraph(3, 4, torch.tensor([[0, 0, 1, 2, 2], [0, 1, 2, 3, 0]]),
                    torch.tensor([[0, 1], [2, 3]]), torch.tensor([[2], [1]]), features,
                    name='toy')


def test_repr_gives_the_counts_and_each_modality_shape():
    graph = _graph({'image': torch.zeros(4, 5), 'text': torch.zeros(4, 2)})
    assert repr(graph) == ('RecGraph(toy: users=3, items=4, train=5, val=2, test=1, '
                           'modalities=[image=(4, 5), text=(4, 2)])')
    assert repr(_graph({})) == ('RecGraph(toy: users=3, items=4, train=5, val=2, test=1, '
                                'modalities=[none])')


def test_each_norm_by_hand_on_weights_that_reach_the_clamp():
    # (user, item, weight): user 0 and item 0 have degree 0.25 (rsqrt 2), user 2 only a
    # zero-weight edge (degree 0: the clamp keeps its value 0 instead of 0 * inf = nan)
    edges = torch.tensor([[0, 1, 1, 2], [0, 0, 1, 1]])
    weights = torch.tensor([0.25, 0.0, 1.0, 0.0])
    # deg_u = [0.25, 1, 0], deg_i = [0.25, 1]
    expected = {
        # w / sqrt(deg_u deg_i): 0.25 / sqrt(0.25 * 0.25) = 1; 1 / sqrt(1 * 1) = 1
        'sym': ([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        # user rows w / sqrt(deg_u), item rows w / sqrt(deg_i): 0.25 / 0.5 = 0.5
        'row': ([[0.5, 0.0], [0.0, 1.0], [0.0, 0.0]], [[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        # w / deg: 0.25 / 0.25 = 1
        'mean': ([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        'none': ([[0.25, 0.0], [0.0, 1.0], [0.0, 0.0]], [[0.25, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    }
    for norm, (ui, iu) in expected.items():
        adj_ui, adj_iu = bipartite_adjacency(edges, 3, 2, edge_weight=weights, norm=norm)
        assert adj_ui.layout == adj_iu.layout == torch.sparse_csr
        assert adj_ui.shape == (3, 2) and adj_iu.shape == (2, 3)
        torch.testing.assert_close(adj_ui.to_dense(), torch.tensor(ui), rtol=0, atol=1e-7)
        torch.testing.assert_close(adj_iu.to_dense(), torch.tensor(iu), rtol=0, atol=1e-7)


def test_unweighted_sym_row_and_mean_by_hand_and_integer_weights():
    graph = _graph({})
    # deg_u = [2, 1, 2], deg_i = [2, 1, 1, 1]
    r = 2 ** -0.5
    sym_ui = [[0.5, r, 0, 0], [0, 0, 1, 0], [0.5, 0, 0, r]]
    adj_ui, adj_iu = graph.adjacency()
    assert adj_ui.layout == torch.sparse_csr
    torch.testing.assert_close(adj_ui.to_dense(), torch.tensor(sym_ui))
    torch.testing.assert_close(adj_iu.to_dense(), torch.tensor(sym_ui).T)
    adj_ui, adj_iu = graph.adjacency(norm='row', layout=torch.sparse_coo)
    assert adj_ui.layout == adj_iu.layout == torch.sparse_coo
    assert adj_ui.is_coalesced() and adj_iu.is_coalesced()
    torch.testing.assert_close(adj_ui.to_dense(), torch.tensor(
        [[r, r, 0, 0], [0, 0, 1, 0], [r, 0, 0, r]]))
    torch.testing.assert_close(adj_iu.to_dense(), torch.tensor(
        [[r, 0, r], [1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    adj_ui, adj_iu = graph.adjacency(norm='mean')
    torch.testing.assert_close(adj_ui.to_dense(), torch.tensor(
        [[0.5, 0.5, 0, 0], [0, 0, 1, 0], [0.5, 0, 0, 0.5]]))
    torch.testing.assert_close(adj_iu.to_dense(), torch.tensor(
        [[0.5, 0, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    # integer weights are taken as floats; a repeated pair adds up
    adj_ui, adj_iu = bipartite_adjacency(torch.tensor([[0, 0, 1], [1, 1, 0]]), 2, 2,
                                         edge_weight=torch.tensor([2, 3, 4]), norm='none')
    assert adj_ui.dtype == torch.float32
    torch.testing.assert_close(adj_ui.to_dense(), torch.tensor([[0.0, 5.0], [4.0, 0.0]]))
    torch.testing.assert_close(adj_iu.to_dense(), torch.tensor([[0.0, 4.0], [5.0, 0.0]]))


def test_bad_norm_and_layout_are_refused_in_full():
    edges = torch.tensor([[0], [0]])
    with pytest.raises(ValueError) as err:
        bipartite_adjacency(edges, 1, 1, norm='sum')
    assert str(err.value) == "norm must be 'sym', 'row', 'mean' or 'none', got 'sum'"
    with pytest.raises(ValueError) as err:
        bipartite_adjacency(edges, 1, 1, layout=torch.strided)
    assert str(err.value) == 'unsupported layout torch.strided'


def test_unique_edges_sorts_drops_repeats_and_keeps_keys_past_int32():
    edges = torch.tensor([[1, 0, 1, 0], [2, 1, 2, 0]])
    assert unique_edges(edges, 3).tolist() == [[0, 0, 1], [0, 1, 2]]
    # 70,000 x 70,000 + 5 = 4,900,000,005 does not fit in int32
    big = unique_edges(torch.tensor([[70_000, 2], [5, 69_999]], dtype=torch.int32), 70_000)
    assert big.dtype == torch.long and big.tolist() == [[2, 70_000], [69_999, 5]]


def test_csr_rows_and_rowptr_by_hand():
    rowptr = csr_rowptr(torch.tensor([0, 0, 2]), 4)
    assert rowptr.dtype == torch.long and rowptr.tolist() == [0, 2, 2, 3, 3]
    # user 0's item 3 sorts after user 1's item 0 only with a row stride above the largest item
    rowptr, col = csr_rows(torch.tensor([[1, 0], [0, 3]]), 2)
    assert rowptr.tolist() == [0, 1, 2] and col.tolist() == [3, 0]
    rowptr, col = _graph({}).train_rows()
    assert rowptr.tolist() == [0, 2, 3, 5] and col.tolist() == [0, 1, 2, 0, 3]
    rowptr, col = csr_rows(torch.empty(2, 0, dtype=torch.long), 2)
    assert rowptr.tolist() == [0, 0, 0] and col.tolist() == []


def _hetero(names=None, name=None):
    data = HeteroData()
    data['user'].num_nodes = 3
    data['item'].num_nodes = 4
    data['item'].text_feat = torch.arange(8, dtype=torch.float64).view(4, 2)
    data['item'].image_feat = torch.ones(4, 3)
    data['item'].x = torch.zeros(4, 1)
    data[EDGE].edge_index = torch.tensor([[0, 1], [2, 3]])
    data[EDGE].val_edge_index = torch.tensor([[2], [0]])
    data[EDGE].test_edge_index = torch.tensor([[1], [1]])
    if names is not None:
        data.modalities = names
    if name is not None:
        data.name = name
    return data


def test_modality_features_in_stored_order_or_sorted_by_name():
    assert list(modality_features(_hetero())) == ['image', 'text']
    feats = modality_features(_hetero(['text', 'image']))
    assert list(feats) == ['text', 'image']
    assert torch.equal(feats['text'], torch.arange(8, dtype=torch.float64).view(4, 2))


def test_from_hetero_takes_counts_splits_float_features_a_subset_and_a_name():
    graph = RecGraph.from_hetero(_hetero())
    assert (graph.num_users, graph.num_items, graph.name) == (3, 4, 'custom')
    assert graph.train_edge_index.tolist() == [[0, 1], [2, 3]]
    assert graph.val_edge_index.tolist() == [[2], [0]]
    assert graph.test_edge_index.tolist() == [[1], [1]]
    assert graph.modalities == ['image', 'text'] and graph.num_train == 2
    assert graph.features['text'].dtype == torch.float32
    assert graph.features['text'].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert RecGraph.from_hetero(_hetero(name='toy')).name == 'toy'
    assert RecGraph.from_hetero(_hetero(name='toy'), name='mine').name == 'mine'
    assert RecGraph.from_hetero(_hetero(), modalities=['text']).modalities == ['text']
    with pytest.raises(KeyError) as err:
        RecGraph.from_hetero(_hetero(), modalities=['text', 'audio', 'video'])
    assert err.value.args[0] == ("modalities ['audio', 'video'] not in the dataset; it has "
                                 "['image', 'text']")


def test_to_keeps_every_field():
    graph = _graph({'image': torch.arange(4.0).view(4, 1)})
    moved = graph.to('cpu')
    assert (moved.num_users, moved.num_items, moved.name) == (3, 4, 'toy')
    assert moved.train_edge_index.tolist() == graph.train_edge_index.tolist()
    assert moved.val_edge_index.tolist() == [[0, 1], [2, 3]]
    assert moved.test_edge_index.tolist() == [[2], [1]]
    assert moved.features['image'].tolist() == [[0.0], [1.0], [2.0], [3.0]]
