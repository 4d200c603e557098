"""Tests of ``mmssl_pyg/nn/conv.py``.

Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/adjacency.py``
and ``mmssl_pyg/nn/propagation.py``: the adjacency's stored buffers, its aggregations in every
layout and LightGCN's layer reduction, each against a value derived here (by hand, from a dense
matrix built here, or from the documented contract). See
``benchmarks/results/mutation/report.md``.

Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import mmssl_pyg.nn.conv as conv_module
from mmssl_pyg.data.graph import bipartite_adjacency
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn import (
    BipartiteConv,
    sparse_matmul,
)
from mmssl_pyg.nn.conv import is_sparse_tensor_available
from mmssl_pyg.nn.propagation import sparse_aggregations
from mmssl_pyg.testing import EDGES, NUM_ITEMS, NUM_USERS, _tiny_graph


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


# --------------------------------------------------------------------------- conv
def _small_adjacency():
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 5, (12,)), torch.randint(0, 7, (12,))]).unique(dim=1)
    return bipartite_adjacency(ei, 5, 7)  # ([users, items], [items, users])


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


@pytest.mark.parametrize('layout', [torch.sparse_csr, torch.sparse_coo])
def test_sparse_aggregations_hand_each_direction_the_other_as_its_transpose(layout,
                                                                         monkeypatch):
    """Each aggregation passes the other matrix as ``adj_rev`` (its transpose), so the
    backward pass takes the cached-transpose product instead of transposing the matrix."""
    adj_ui, adj_iu = bipartite_adjacency(EDGES, NUM_USERS, NUM_ITEMS, layout=layout)
    seen = []
    original = conv_module._TransposedSpMM.apply
    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply',
                        lambda a, rev, x: (seen.append((a, rev)), original(a, rev, x))[1])
    to_users, to_items = sparse_aggregations(BipartiteConv(), adj_ui, adj_iu)
    torch.manual_seed(0)
    to_users(torch.randn(NUM_ITEMS, 2, requires_grad=True))
    to_items(torch.randn(NUM_USERS, 2, requires_grad=True))
    assert [(a is adj_ui, rev is adj_iu) for a, rev in seen[:1]] == [(True, True)]
    assert [(a is adj_iu, rev is adj_ui) for a, rev in seen[1:]] == [(True, True)]


# --------------------------------------------------------------------------- conv
def test_message_and_aggregate_is_the_sparse_product():
    """The fused path PyG takes for sparse adjacencies (a SparseTensor with torch-sparse)."""
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 5, (12,)), torch.randint(0, 7, (12,))]).unique(dim=1)
    adj_ui, _ = bipartite_adjacency(ei, 5, 7)  # [users, items]
    x = torch.randn(7, 3)
    want = adj_ui.to_dense() @ x
    conv = BipartiteConv()
    assert torch.allclose(conv.message_and_aggregate(adj_ui, (x, None)), want, atol=1e-6)
    assert torch.allclose(conv.message_and_aggregate(adj_ui, x), want, atol=1e-6)


def test_sparse_tensor_availability_follows_the_installed_package():
    installed = importlib.util.find_spec('torch_sparse') is not None
    assert is_sparse_tensor_available() == installed


def test_conv_size_mismatch_message_and_repr():
    adj_ui, _ = _small_adjacency()
    with pytest.raises(ValueError) as err:
        BipartiteConv()(torch.randn(6, 3), adj_ui)
    assert str(err.value) == 'adjacency has 7 source columns but x has 6 rows'
    with pytest.raises(ValueError) as err:
        BipartiteConv()(torch.randn(7, 3), torch.zeros(2, 0, dtype=torch.long))
    assert str(err.value) == 'BipartiteConv needs size=(num_src, num_dst) with edge_index input'
    assert repr(BipartiteConv()) == 'BipartiteConv()'


def test_sparse_matmul_takes_bfloat16_inputs_in_float32():
    adj_ui, _ = _small_adjacency()
    x = torch.randn(7, 3).bfloat16()
    out = sparse_matmul(adj_ui, x)  # outside autocast: the sum is formed in float32
    assert out.dtype == torch.float32
    assert torch.allclose(out, adj_ui.to_dense() @ x.float(), atol=1e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # inside: float32 too
        out = sparse_matmul(adj_ui, torch.randn(7, 3))
    assert out.dtype == torch.float32


def test_sparse_matmul_uses_the_cached_transpose_only_when_valid(monkeypatch):
    adj_ui, adj_iu = _small_adjacency()
    calls = []
    original = conv_module._TransposedSpMM.apply
    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply',
                        lambda *a: (calls.append(1), original(*a))[1])
    x = torch.randn(7, 3, requires_grad=True)
    want = adj_ui.to_dense() @ x.detach()
    cases = [  # (x, adj_rev, grad enabled, fast path expected)
        (x, adj_iu, True, True),
        (x, None, True, False),
        (x.detach(), adj_iu, True, False),
        (x, adj_iu, False, False),
    ]
    for inp, rev, grad, fast in cases:
        calls.clear()
        with torch.set_grad_enabled(grad):
            out = sparse_matmul(adj_ui, inp, rev)
        assert torch.allclose(out, want, atol=1e-6)
        assert bool(calls) == fast
    # also for bfloat16 inputs (cast to float32 first) and through the layer
    for out in (sparse_matmul(adj_ui, x.bfloat16(), adj_iu),
                BipartiteConv()(x, adj_ui, adj_rev=adj_iu)):
        assert calls.pop() == 1 and torch.allclose(out, want, atol=5e-2)
    # a differentiable adjacency never takes it: its gradient would be lost
    calls.clear()
    adj = adj_ui.to_sparse_coo().coalesce()
    adj = torch.sparse_coo_tensor(adj.indices(), adj.values().clone().requires_grad_(),
                                  adj.shape)
    sparse_matmul(adj, x, adj_iu)
    assert not calls


@pytest.mark.parametrize('index_dtype', [torch.int64, torch.int32])
def test_csr_products_as_embedding_bags_equal_torch_sparse_mm(index_dtype, monkeypatch):
    """Issue 24: a CSR product on the CPU is one weighted embedding bag per row. Values and
    gradients (through the cached transpose) equal ``torch.sparse.mm``'s to float round-off,
    rows without entries (users 0 and 4 here) included; COO keeps ``torch.sparse.mm``."""
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(1, 4, (40,)), torch.randint(0, 9, (40,))]).unique(dim=1)
    ui, iu = bipartite_adjacency(ei, 5, 9)
    ui, iu = (torch.sparse_csr_tensor(a.crow_indices().to(index_dtype),
                                      a.col_indices().to(index_dtype), a.values(), a.shape)
              for a in (ui, iu))
    bags = []
    original = conv_module.F.embedding_bag
    monkeypatch.setattr(conv_module.F, 'embedding_bag',
                        lambda *a, **k: (bags.append(1), original(*a, **k))[1])
    x = torch.randn(9, 6, requires_grad=True)
    grad = torch.randn(5, 6)
    out = sparse_matmul(ui, x, iu)
    out.backward(grad)
    assert len(bags) == 2  # forward and backward
    dense = ui.to_dense()
    assert torch.allclose(out, dense @ x.detach(), atol=1e-6)
    assert torch.equal(out[[0, 4]], torch.zeros(2, 6))
    assert torch.allclose(x.grad, dense.t() @ grad, atol=1e-6)
    ref = x.detach().clone().requires_grad_()
    torch.sparse.mm(ui.to_sparse_coo(), ref).backward(grad)
    assert torch.allclose(out, torch.sparse.mm(ui.to_sparse_coo(), ref.detach()), atol=1e-6)
    assert torch.allclose(x.grad, ref.grad, atol=1e-6)
    with torch.no_grad():  # evaluation takes it too
        assert torch.allclose(sparse_matmul(ui, x), out, atol=1e-6) and len(bags) == 3
    sparse_matmul(ui.to_sparse_coo(), x.detach())
    assert len(bags) == 3
    # strided inputs (a column slice, an expanded row) are read as they are; zero-width ones
    # (which embedding_bag refuses) keep torch.sparse.mm
    wide = torch.randn(9, 10)
    for inp in (wide[:, 2:6], torch.randn(1, 4).expand(9, 4)):
        assert torch.allclose(sparse_matmul(ui, inp), dense @ inp, atol=1e-6)
    assert len(bags) == 5
    assert sparse_matmul(ui, torch.randn(9, 0)).shape == (5, 0) and len(bags) == 5


def test_embedding_bags_take_every_csr_product_with_an_entry_and_a_column(monkeypatch):
    """The boundaries of the CPU embedding-bag path: a CSR matrix with a single entry and a
    one-column input take it (values equal the dense product); a matrix without entries keeps
    ``torch.sparse.mm`` (the documented routing) and gives zeros."""
    bags = []
    original = conv_module.F.embedding_bag
    monkeypatch.setattr(conv_module.F, 'embedding_bag',
                        lambda *a, **k: (bags.append(1), original(*a, **k))[1])
    one = torch.sparse_csr_tensor(torch.tensor([0, 0, 1, 1]), torch.tensor([2]),
                                  torch.tensor([0.5]), (3, 4))
    x = torch.arange(12.0).view(4, 3)
    want = torch.zeros(3, 3)
    want[1] = 0.5 * x[2]  # the one entry: row 1, column 2, value 0.5
    assert torch.equal(sparse_matmul(one, x), want) and len(bags) == 1
    column = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert torch.equal(sparse_matmul(one, column), torch.tensor([[0.0], [1.5], [0.0]]))
    assert len(bags) == 2
    empty = torch.sparse_csr_tensor(torch.zeros(4, dtype=torch.int64),
                                    torch.zeros(0, dtype=torch.int64), torch.zeros(0), (3, 4))
    assert torch.equal(sparse_matmul(empty, x), torch.zeros(3, 3)) and len(bags) == 2


def test_unweighted_edge_index_sums_the_neighbours():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]])  # (source, destination)
    x = torch.tensor([[1.0], [10.0], [100.0]])
    out = BipartiteConv()(x, ei, size=(3, 3))
    assert torch.equal(out, torch.tensor([[10.0], [1.0], [110.0]]))


def test_edge_index_output_has_every_destination_row():
    ei = torch.tensor([[0, 1], [0, 0]])  # destinations 1 and 2 receive nothing
    out = BipartiteConv()(torch.ones(2, 1), ei, edge_weight=torch.tensor([2.0, 3.0]),
                          size=(2, 3))
    assert torch.equal(out, torch.tensor([[5.0], [0.0], [0.0]]))


@pytest.mark.parametrize('layout', ['csr', 'coo'])
def test_cached_transposes_match_the_layout_and_are_used(layout, monkeypatch):
    graph = _tiny_graph()
    model = MMSSL(graph, embedding_dim=8, num_heads=2, norm='row', adj_layout=layout)
    adj = model.generator_adj  # one-sided weights: the transposes are cached
    want = torch.sparse_csr if layout == 'csr' else torch.sparse_coo
    for a, t in ((adj.ui, adj.ui_t), (adj.iu, adj.iu_t)):
        assert a.layout == want and t.layout == want
        assert torch.equal(t.to_dense(), a.to_dense().t())
    # both directions hand the layer a cached transpose for the backward pass
    seen = []
    original = conv_module._TransposedSpMM.apply
    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply',
                        lambda a, rev, x: (seen.append((a, rev)), original(a, rev, x))[1])
    for m in (model, MMSSL(graph, embedding_dim=8, num_heads=2, adj_layout=layout)):
        seen.clear()
        adj = m.generator_adj
        adj.to_users(m.conv, torch.randn(graph.num_items, 2, requires_grad=True))
        adj.to_items(m.conv, torch.randn(graph.num_users, 2, requires_grad=True))
        rev_u = adj.iu if adj.ui_t is None else adj.ui_t  # 'sym': each is the other's .T
        rev_i = adj.ui if adj.iu_t is None else adj.iu_t
        assert [(a is adj.ui, r is rev_u) for a, r in seen[:1]] == [(True, True)]
        assert [(a is adj.iu, r is rev_i) for a, r in seen[1:]] == [(True, True)]


@pytest.mark.parametrize('layout', [torch.sparse_csr, torch.sparse_coo])
def test_sparse_aggregations_against_dense_matrices(layout):
    """`sparse_aggregations` (the baselines' propagation path): to_users is A x, to_items is
    A^T x (symmetric normalisation); gradients flow through the transposed matrix (by hand:
    d sum(A x) / dx = A^T 1)."""
    from mmssl_pyg.nn.conv import BipartiteConv
    from mmssl_pyg.nn.propagation import light_propagate, sparse_aggregations
    ei = torch.tensor([[0, 0, 1, 2, 2, 2], [0, 3, 1, 0, 1, 2]])
    adj_ui, adj_iu = bipartite_adjacency(ei, 3, 4, norm='sym', layout=layout)
    dense_ui, dense_iu = adj_ui.to_dense(), adj_iu.to_dense()
    assert torch.allclose(dense_ui, dense_iu.t())
    to_users, to_items = sparse_aggregations(BipartiteConv(), adj_ui, adj_iu)
    torch.manual_seed(0)
    items = torch.randn(4, 5, requires_grad=True)
    users = torch.randn(3, 5, requires_grad=True)
    out_u, out_i = to_users(items), to_items(users)
    assert torch.allclose(out_u, dense_ui @ items, atol=1e-6)
    assert torch.allclose(out_i, dense_iu @ users, atol=1e-6)
    (out_u.sum() + 2 * out_i.sum()).backward()
    assert torch.allclose(items.grad, dense_ui.t() @ torch.ones(3, 5), atol=1e-6)
    assert torch.allclose(users.grad, 2 * dense_iu.t() @ torch.ones(4, 5), atol=1e-6)
    u, i = light_propagate(users.detach(), items.detach(), 1, to_users, to_items)
    assert torch.allclose(u, (users.detach() + dense_ui @ items.detach()) / 2)
    assert torch.allclose(i, (items.detach() + dense_iu @ users.detach()) / 2)


def _run_python(code: str, tmp: Path, check: bool = True):
    import os
    import subprocess
    import sys
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, 'TMPDIR': str(tmp), 'PYTHONPATH': root}
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          check=check)


_RENDER = ('import os, tempfile\n'
           'from mmssl_pyg.nn import BipartiteConv\n'
           'BipartiteConv()\n'
           'print(sorted(str(p.relative_to(tempfile.gettempdir()))\n'
           '             for p in __import__("pathlib").Path(tempfile.gettempdir()).rglob("*")\n'
           '             if "propagate" in p.name))\n')


def test_the_rendered_propagate_module_is_removed_at_exit_in_plain_python(tmp_path):
    """PyG renders BipartiteConv's propagate into a module file in the temporary folder and
    never deletes it; here it goes to the process's own folder, removed at exit, so a Python
    session (not only the command line) leaves nothing there."""
    out = _run_python(_RENDER, tmp_path).stdout
    assert 'mmssl-pyg-pyg-modules-' in out and 'BipartiteConv_propagate' in out  # while it ran
    assert not list(tmp_path.iterdir())  # and is gone, folder included


def test_a_killed_process_rendered_module_is_removed_by_the_next_one(tmp_path):
    """kill -9 skips the exit handler; the next process that renders the module removes the
    dead process's folder (folders do not pile up over a study), and keeps a live one's."""
    import os
    killed = _run_python(_RENDER + 'import signal; os.kill(os.getpid(), signal.SIGKILL)\n',
                         tmp_path, check=False)
    assert killed.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith('mmssl-pyg-pyg-modules-')
    alive = tmp_path / f'mmssl-pyg-pyg-modules-{os.getpid()}'  # this test's process runs
    alive.mkdir()
    (tmp_path / 'mmssl-pyg-pyg-modules-notapid').mkdir()
    _run_python(_RENDER, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, 'mmssl-pyg-pyg-modules-notapid'])


def test_sparse_product_routes_fresh_csr_products_and_trainable_values(monkeypatch):
    """The routing of ``_sparse_product`` off the embedding-bag path (its docstring): with
    ``fresh`` a CSR product is written into a new tensor by ``addmm_(beta=0)``, which ignores
    what that memory held (NaN here); without ``fresh``, and for COO even with it,
    ``torch.sparse.mm``. A CSR matrix whose values need a gradient leaves the bags only while
    autograd records."""
    calls, bags = [], []
    real_mm, real_addmm_ = torch.sparse.mm, torch.Tensor.addmm_
    real_new_empty, real_bag = torch.Tensor.new_empty, conv_module.F.embedding_bag
    monkeypatch.setattr(torch.sparse, 'mm',
                        lambda *a, **k: (calls.append('mm'), real_mm(*a, **k))[1])
    monkeypatch.setattr(torch.Tensor, 'addmm_', lambda self, *a, **k: (
        calls.append(('addmm_', k.get('beta'))), real_addmm_(self, *a, **k))[1])
    monkeypatch.setattr(torch.Tensor, 'new_empty', lambda self, *size, **kw: real_new_empty(
        self, *size, **kw).fill_(float('nan')))
    monkeypatch.setattr(conv_module.F, 'embedding_bag',
                        lambda *a, **k: (bags.append(1), real_bag(*a, **k))[1])
    product = conv_module._sparse_product
    # [[1, 0, 2], [0, 0, 0], [0, 3, 0]] @ [[1, 2], [3, 4], [5, 6]], worked by hand
    crow, col = torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    want = torch.tensor([[11.0, 14.0], [0.0, 0.0], [9.0, 12.0]])
    empty = torch.sparse_csr_tensor(torch.zeros(5, dtype=torch.int64),
                                    torch.zeros(0, dtype=torch.int64), torch.zeros(0), (4, 3))
    assert torch.equal(product(empty, x, fresh=True), torch.zeros(4, 2))
    assert (calls, bags) == ([('addmm_', 0)], [])
    calls.clear()
    assert torch.equal(product(empty, x), torch.zeros(4, 2)) and (calls, bags) == (['mm'], [])
    calls.clear()
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 0, 2], [0, 2, 1]]),
                                  torch.tensor([1.0, 2.0, 3.0]), (3, 3))
    assert torch.equal(product(coo, x, fresh=True), want) and (calls, bags) == (['mm'], [])
    calls.clear()
    trained = torch.sparse_csr_tensor(crow, col, torch.tensor([1.0, 2.0, 3.0]), (3, 3))
    trained.requires_grad_()
    with torch.no_grad():  # nothing recorded: the bags take it
        assert torch.equal(product(trained, x, fresh=True), want)
    assert (calls, bags) == ([], [1])
    assert torch.equal(product(trained, x).detach(), want)
    assert (calls, bags) == (['mm'], [1])
