import pytest
import torch

from mmssl_pyg.data.graph import bipartite_adjacency
from mmssl_pyg.nn.conv import BipartiteConv, is_sparse_tensor_available


def _graph():
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 7, (30,)), torch.randint(0, 11, (30,))])
    ei = torch.unique(ei, dim=1)
    return ei, *bipartite_adjacency(ei, 7, 11)


def _dense_reference(ei, n_u, n_i):
    a = torch.zeros(n_u, n_i)
    a[ei[0], ei[1]] = 1.0
    du, di = a.sum(1).clamp(min=1), a.sum(0).clamp(min=1)
    return a / du.sqrt()[:, None] / di.sqrt()[None, :]


def test_sym_norm_matches_dense_reference():
    ei, adj_ui, adj_iu = _graph()
    ref = _dense_reference(ei, 7, 11)
    assert torch.allclose(adj_ui.to_dense(), ref)
    assert torch.allclose(adj_iu.to_dense(), ref.t())


@pytest.mark.parametrize('layout', ['edge_index', 'csr', 'coo', 'csr+rev'])
def test_inputs_give_same_output_and_gradient(layout):
    ei, adj_ui, adj_iu = _graph()
    x = torch.randn(11, 4, requires_grad=True)
    ref = _dense_reference(ei, 7, 11) @ x
    conv = BipartiteConv()
    if layout == 'edge_index':
        w = adj_ui.to_sparse_coo().coalesce()
        out = conv(x, w.indices().flip(0), edge_weight=w.values(), size=(11, 7))
    elif layout == 'csr':
        out = conv(x, adj_ui)
    elif layout == 'coo':
        out = conv(x, adj_ui.to_sparse_coo())
    else:
        out = conv(x, adj_ui, adj_rev=adj_iu)
    assert out.shape == (7, 4)
    assert torch.allclose(out, ref, atol=1e-6)
    g, = torch.autograd.grad(out.pow(2).sum(), x)
    g_ref, = torch.autograd.grad(ref.pow(2).sum(), x)
    assert torch.allclose(g, g_ref, atol=1e-5)


@pytest.mark.skipif(not is_sparse_tensor_available(), reason='torch-sparse not installed')
def test_sparse_tensor_input():
    from torch_geometric.typing import SparseTensor
    ei, adj_ui, _ = _graph()
    x = torch.randn(11, 4)
    w = adj_ui.to_sparse_coo().coalesce()
    adj_t = SparseTensor(row=w.indices()[0], col=w.indices()[1], value=w.values(),
                         sparse_sizes=(7, 11))
    assert torch.allclose(BipartiteConv()(x, adj_t), adj_ui @ x, atol=1e-6)


def test_edge_index_needs_size():
    ei, *_ = _graph()
    with pytest.raises(ValueError, match='size'):
        BipartiteConv()(torch.randn(11, 4), ei.flip(0))


@pytest.mark.parametrize('layout', [torch.sparse_coo, torch.sparse_csr])
def test_adjacency_is_built_on_the_edges_device_not_the_default_one(layout):
    """A default device set by the user (here ``meta``) must not move the graph off its data."""
    edge_index = torch.tensor([[0, 0, 1], [0, 1, 1]])
    with torch.device('meta'):
        ui, iu = bipartite_adjacency(edge_index, 2, 2, norm='sym', layout=layout)
    assert ui.device == iu.device == edge_index.device
    # D^-1/2 A D^-1/2 with user degrees (2, 1) and item degrees (1, 2)
    expected = torch.tensor([[1 / 2 ** 0.5, 1 / 2], [0.0, 1 / 2 ** 0.5]])
    assert torch.allclose(ui.to_dense(), expected)
