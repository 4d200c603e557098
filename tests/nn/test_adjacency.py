"""Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/adjacency.py``
and ``mmssl_pyg/nn/propagation.py``: the adjacency's stored buffers, its aggregations in every
layout and LightGCN's layer reduction, each against a value derived here (by hand, from a dense
matrix built here, or from the documented contract). See
``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.nn.adjacency import LAYOUTS, BipartiteAdjacency
from mmssl_pyg.nn.conv import BipartiteConv, is_sparse_tensor_available
from mmssl_pyg.testing import EDGES, NUM_ITEMS, NUM_USERS


def _dense_by_hand(norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(A_ui [n_u, n_i], A_iu [n_i, n_u])`` from the degrees: ``'sym'`` weights an edge
    ``1/sqrt(d_u d_i)`` both ways, ``'row'`` gives user rows ``1/sqrt(d_u)`` and item rows
    ``1/sqrt(d_i)``."""
    a = torch.zeros(NUM_USERS, NUM_ITEMS)
    a[EDGES[0], EDGES[1]] = 1.0
    deg_u, deg_i = a.sum(1, keepdim=True), a.sum(0, keepdim=True)
    inv_u = torch.where(deg_u > 0, deg_u.rsqrt(), torch.zeros_like(deg_u))
    inv_i = torch.where(deg_i > 0, deg_i.rsqrt(), torch.zeros_like(deg_i))
    if norm == 'sym':
        ui = a * inv_u * inv_i
        return ui, ui.t()
    return a * inv_u, (a * inv_i).t()


# --------------------------------------------------------------------------- adjacency
@pytest.mark.parametrize('norm', ['sym', 'row'])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_adjacency_buffers_stay_out_of_the_state_dict(layout, norm):
    """The normalised graph is rebuilt from the data, never saved with the weights: every
    buffer is non-persistent (a checkpoint holds no graph); ``num_edges`` counts the edges."""
    adj = BipartiteAdjacency(EDGES, NUM_USERS, NUM_ITEMS, norm, layout)
    buffers = dict(adj.named_buffers())
    expected = ({'ui', 'iu'} if norm == 'sym' else {'ui', 'iu', 'ui_t', 'iu_t'}) \
        if layout in ('csr', 'coo') else {'ui_index', 'ui_value', 'iu_index', 'iu_value'}
    assert set(buffers) == expected  # the graph is held ...
    assert adj.state_dict() == {}  # ... but never saved
    assert adj.num_edges == EDGES.size(1) == 7


@pytest.mark.parametrize('layout', ['csr', 'coo'])
def test_sym_adjacency_stores_each_direction_once(layout):
    """With ``'sym'`` the two directions are each other's transpose, so no transposed copy is
    cached (``ui_t``/``iu_t`` are None: 2 matrices of E nonzeros); with ``'row'`` the cached
    transposes are exactly the dense transposes."""
    sym = BipartiteAdjacency(EDGES, NUM_USERS, NUM_ITEMS, 'sym', layout)
    assert sym.ui_t is None and sym.iu_t is None
    stored = sum(b.to_sparse_coo()._nnz() for b in sym.buffers())
    assert stored == 2 * EDGES.size(1)
    row = BipartiteAdjacency(EDGES, NUM_USERS, NUM_ITEMS, 'row', layout)
    ui, iu = _dense_by_hand('row')
    assert torch.allclose(row.ui.to_dense(), ui) and torch.allclose(row.iu.to_dense(), iu)
    assert torch.allclose(row.ui_t.to_dense(), ui.t())
    assert torch.allclose(row.iu_t.to_dense(), iu.t())


@pytest.mark.parametrize('norm', ['sym', 'row'])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_adjacency_aggregations_match_dense_matrices(layout, norm):
    """``to_users(x) = A_ui x`` and ``to_items(x) = A_iu x`` in every layout. The
    ``'sparse_tensor'`` layout needs torch-sparse: without it the aggregation raises an
    ImportError that names the package."""
    adj = BipartiteAdjacency(EDGES, NUM_USERS, NUM_ITEMS, norm, layout)
    conv = BipartiteConv()
    torch.manual_seed(0)
    item_x, user_x = torch.randn(NUM_ITEMS, 3), torch.randn(NUM_USERS, 3)
    if layout == 'sparse_tensor' and not is_sparse_tensor_available():
        with pytest.raises(ImportError, match='torch-sparse'):
            adj.to_users(conv, item_x)
        with pytest.raises(ImportError, match='torch-sparse'):
            adj.to_items(conv, user_x)
        return
    ui, iu = _dense_by_hand(norm)
    assert torch.allclose(adj.to_users(conv, item_x), ui @ item_x, atol=1e-6)
    assert torch.allclose(adj.to_items(conv, user_x), iu @ user_x, atol=1e-6)
