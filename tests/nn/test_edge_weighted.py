"""Issue 24: the vectorised GRCN and MMGCN give the numbers of the previous implementation.

``grcn_mmgcn_reference.json`` holds the per-epoch training losses, per-epoch validation
metrics, best epoch and final embedding norms of GRCN and MMGCN trained on tiktok-mini with
their presets (3 short epochs, seed 2023, CPU, one thread; see ``testing.grcn_mmgcn_run``),
recorded by ``_record_grcn_mmgcn.py`` at the commit named in the file, *before* GRCN's
per-edge message passing became fused sparse kernels and MMGCN's per-node-type products became
stacked ones. Only the order of floating-point sums changed, so the tolerances are relative
1e-4 on losses and norms (the observed differences were below 2e-7) and 1e-6 absolute on the
metrics.

The edge-level kernels of :class:`~mmssl_pyg.nn.edge_weighted.EdgeWeightedGraph` are also
checked, values and gradients, against a plain loop over the edges of a small graph."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.nn.edge_weighted import EdgeWeightedGraph, index_dtype, unit_rows


def _tiny(shuffle: bool):
    """5 users, 4 items, 9 edges (user 4 has none, item 3 one); optionally out of order."""
    edges = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 3], [0, 2, 0, 1, 3, 1, 2, 0, 2]])
    if shuffle:
        edges = edges[:, torch.tensor([4, 0, 7, 2, 8, 1, 6, 3, 5])]
    return edges, 5, 4


def _loop(edges, n_u, n_i, w, xi, xu, a, b):
    """The three operations written as a Python loop over the edges."""
    to_u = torch.zeros(n_u, xi.size(1), dtype=xi.dtype)
    to_i = torch.zeros(n_i, xu.size(1), dtype=xu.dtype)
    dots = []
    for e, (u, i) in enumerate(edges.t().tolist()):
        to_u[u] = to_u[u] + w[e] * xi[i]
        to_i[i] = to_i[i] + w[e] * xu[u]
        dots.append((a[u] * b[i]).sum())
    return to_u, to_i, torch.stack(dots)


@pytest.mark.parametrize('shuffle', [False, True])
def test_edge_kernels_equal_a_loop_over_edges(shuffle):
    edges, n_u, n_i = _tiny(shuffle)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    assert graph.user_major is not shuffle
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    w, xi, xu, a, b = leaf(9), leaf(n_i, 3), leaf(n_u, 3), leaf(n_u, 3), leaf(n_i, 3)
    fast = (graph.to_users(w, xi), graph.to_items(w, xu), graph.edge_dot(a, b))
    slow = _loop(edges, n_u, n_i, w, xi, xu, a, b)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s)
    # gradients: the same random projection of all three outputs
    weights = [torch.randn(s.shape, generator=gen, dtype=torch.float64) for s in slow]
    grads_fast = torch.autograd.grad(sum((f * c).sum() for f, c in zip(fast, weights)),
                                     [w, xi, xu, a, b])
    grads_slow = torch.autograd.grad(sum((s * c).sum() for s, c in zip(slow, weights)),
                                     [w, xi, xu, a, b])
    for f, s in zip(grads_fast, grads_slow):
        torch.testing.assert_close(f, s)


def test_edge_kernels_pass_gradcheck():
    edges, n_u, n_i = _tiny(shuffle=True)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(9, generator=gen, dtype=torch.float64, requires_grad=True)
    xi = torch.randn(n_i, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    xu = torch.randn(n_u, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(graph.to_users, (w, xi))
    assert torch.autograd.gradcheck(graph.to_items, (w, xu))
    assert torch.autograd.gradcheck(graph.edge_dot, (xu, xi))


def test_edge_graph_repr_buffers_and_one_sided_gradients():
    """``extra_repr``; the patterns are buffers left out of checkpoints; a gradient asked for
    the weights only (or the features only) is the loop's."""
    edges, n_u, n_i = _tiny(shuffle=True)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    assert graph.num_edges == 9 and repr(graph) == \
        'EdgeWeightedGraph(5 users, 4 items, 9 edges)'
    assert graph.state_dict() == {} and graph.crow_u.tolist() == [0, 2, 5, 7, 9, 9]
    for name in ('crow_u', 'col_u', 'crow_i', 'col_i'):  # int32: no conversion per product
        assert getattr(graph, name).dtype == torch.int32, name
    for name in ('user', 'item', 'order_u', 'order_i'):  # index tensors stay int64
        assert getattr(graph, name).dtype == torch.int64, name
    assert graph.crow_i.tolist() == [0, 3, 5, 8, 9]
    # canonical CSR: each row's columns ascending (items per user, users per item)
    assert graph.col_u.tolist() == [0, 2, 0, 1, 3, 1, 2, 0, 2]
    assert graph.col_i.tolist() == [0, 1, 3, 1, 2, 0, 2, 3, 1]
    assert graph.user_major is False
    assert EdgeWeightedGraph(_tiny(shuffle=False)[0], n_u, n_i).user_major is True
    gen = torch.Generator().manual_seed(2)
    w, xi = torch.randn(9, generator=gen), torch.randn(n_i, 3, generator=gen)
    xu, a = torch.randn(n_u, 3, generator=gen), torch.randn(n_u, 3, generator=gen)
    for need_w in (True, False):  # weights and edge_dot's user rows, or the item/user rows
        w_, xi_ = w.clone().requires_grad_(need_w), xi.clone().requires_grad_(not need_w)
        xu_, a_ = xu.clone().requires_grad_(not need_w), a.clone().requires_grad_(need_w)
        inputs = [w_, a_] if need_w else [xi_, xu_]
        fast = (graph.to_users(w_, xi_), graph.to_items(w_, xu_), graph.edge_dot(a_, xi_))
        slow = _loop(edges, n_u, n_i, w_, xi_, xu_, a_, xi_)
        grads = [torch.autograd.grad(sum(t.sum() for t in out), inputs) for out in (fast, slow)]
        for f, s in zip(*grads):
            torch.testing.assert_close(f, s)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_edge_kernels_run_in_float32_for_half_inputs_and_under_autocast(dtype):
    edges, n_u, n_i = _tiny(shuffle=False)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    gen = torch.Generator().manual_seed(3)
    w, xi = torch.randn(9, generator=gen), torch.randn(n_i, 3, generator=gen)
    want = graph.to_users(w, xi.to(dtype).float())
    for args in ((w, xi.to(dtype)), (w.to(dtype), xi.to(dtype).float())):
        got = graph.to_users(*args)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, graph.to_users(args[0].float(), args[1].float()))
    assert torch.equal(graph.to_users(w, xi.to(dtype)), want)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = graph.edge_dot(xi.new_ones(n_u, 3), xi)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, graph.edge_dot(xi.new_ones(n_u, 3), xi))


def test_index_dtype_is_int32_while_counts_fit():
    assert index_dtype(0) == index_dtype(2 ** 31 - 1) == torch.int32
    assert index_dtype(2 ** 31) == index_dtype(2 ** 40) == torch.int64


def test_indices_widen_when_any_one_count_reaches_the_limit(monkeypatch):
    """The limit scaled down from 2**31 to 6 (no test machine holds 2**31 edges): a graph
    gets int64 CSR indices as soon as its edges, its users or its items alone number 6."""
    from mmssl_pyg.nn import edge_weighted
    monkeypatch.setattr(edge_weighted, 'index_dtype',
                        lambda largest: torch.int32 if largest < 6 else torch.int64)
    six_edges = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]])
    two_edges = torch.tensor([[0, 1], [1, 0]])
    five_edges = six_edges[:, :5]
    for edges, n_u, n_i, dtype in ((six_edges, 3, 2, torch.int64),   # the edges
                                   (two_edges, 6, 2, torch.int64),   # the users
                                   (two_edges, 2, 6, torch.int64),   # the items
                                   (five_edges, 5, 5, torch.int32)):  # all below the limit
        graph = EdgeWeightedGraph(edges, n_u, n_i)
        assert {getattr(graph, name).dtype for name in ('crow_u', 'col_u', 'crow_i',
                                                         'col_i')} == {dtype}, (n_u, n_i)


def test_unit_rows_gradient_worked_by_hand():
    """x = (3, 4): y = (0.6, 0.8); for g = (1, 0), <g, y> = 0.6, so the gradient is
    ((1, 0) - 0.6 (0.6, 0.8)) / 5 = (0.128, -0.096). A row below eps = 0.5, (0.3, 0.1), is
    divided by 0.5 and its gradient is g / 0.5."""
    x = torch.tensor([[3.0, 4.0], [0.3, 0.1]], dtype=torch.float64, requires_grad=True)
    y = unit_rows(x, eps=0.5)
    torch.testing.assert_close(y.detach(), torch.tensor([[0.6, 0.8], [0.6, 0.2]],
                                                        dtype=torch.float64))
    (grad,) = torch.autograd.grad(y, x, torch.tensor([[1.0, 0.0], [1.0, -2.0]],
                                                     dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([[0.128, -0.096], [2.0, -4.0]],
                                                  dtype=torch.float64))
    # the default eps is F.normalize's 1e-12: a row of norm 1e-13 becomes 0.1, not a unit row
    tiny = unit_rows(torch.tensor([[1e-13, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(tiny, torch.tensor([[0.1, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_unit_rows_equals_f_normalize_values_and_gradients(dtype):
    """Values bit for bit and gradients to round-off, with a zero row, a row below ``eps`` and
    a row exactly at it (where clamp_min still passes the gradient)."""
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(6, 5, generator=gen, dtype=dtype)
    base[1] = 0.0
    base[2] = base[2] / torch.linalg.vector_norm(base[2]) * 1e-3
    base[3] = torch.tensor([0.25, 0.0, 0.0, 0.0, 0.0], dtype=dtype)  # norm exactly eps
    g = torch.randn(6, 5, generator=gen, dtype=dtype)
    got_x, want_x = base.clone().requires_grad_(), base.clone().requires_grad_()
    got, want = unit_rows(got_x, eps=0.25), F.normalize(want_x, dim=1, eps=0.25)
    assert torch.equal(got, want)
    (got_g,), (want_g,) = torch.autograd.grad(got, got_x, g), torch.autograd.grad(want, want_x, g)
    torch.testing.assert_close(got_g, want_g)
    assert torch.autograd.gradcheck(lambda x: unit_rows(x, eps=0.25),
                                    (base.double()[[0, 2, 4, 5]].requires_grad_(),))


@pytest.mark.parametrize('shuffle', [False, True])
@pytest.mark.parametrize('over', ['users', 'items'])
@pytest.mark.parametrize('columns', [None, 3])
def test_softmax_equals_pyg_softmax_values_and_gradients(shuffle, over, columns):
    """``EdgeWeightedGraph.softmax`` against ``torch_geometric.utils.softmax`` over the edges'
    users (items), for one score per edge and for 3 independent columns, with a user and an
    item of one edge (their weight is 1) and a user with none; plus gradcheck."""
    from torch_geometric.utils import softmax
    edges, n_u, n_i = _tiny(shuffle)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    index, num = (edges[0], n_u) if over == 'users' else (edges[1], n_i)
    gen = torch.Generator().manual_seed(5)
    shape = (9,) if columns is None else (9, columns)
    score = (4 * torch.randn(*shape, generator=gen, dtype=torch.float64)).requires_grad_()
    g = torch.randn(*shape, generator=gen, dtype=torch.float64)
    got, want = graph.softmax(score, over=over), softmax(score, index, num_nodes=num)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    torch.testing.assert_close(torch.autograd.grad(got, score, g)[0],
                               torch.autograd.grad(want, score, g)[0])
    sums = torch.zeros(num, *shape[1:], dtype=torch.float64).index_add_(0, index, got.detach())
    nodes = torch.unique(index)  # every node with an edge: its weights sum to 1
    torch.testing.assert_close(sums[nodes], torch.ones_like(sums[nodes]))
    assert torch.autograd.gradcheck(lambda s: graph.softmax(s, over=over), (score,))


def test_softmax_float32_and_bad_side():
    edges, n_u, n_i = _tiny(shuffle=True)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    from torch_geometric.utils import softmax
    score = torch.randn(9, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(graph.softmax(score), softmax(score, edges[0], num_nodes=n_u))
    with pytest.raises(ValueError, match="'users' or 'items'"):
        graph.softmax(score, over='edges')


def _nan_new_empty(monkeypatch):
    """``new_empty`` handing out NaN-filled memory."""
    real_new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, 'new_empty', lambda self, *size, **kw: real_new_empty(
        self, *size, **kw).fill_(float('nan')))


def test_spmm_is_the_embedding_bag_product_on_the_cpu(monkeypatch):
    """Issue 24: GRCN's products on the CPU are ``BipartiteConv``'s weighted embedding bags
    (one helper for both): equal to a dense reference, zero in rows without edges (user 4),
    nothing taken from the new memory."""
    from mmssl_pyg.nn import conv as conv_module
    from mmssl_pyg.nn import edge_weighted
    edges, n_u, n_i = _tiny(shuffle=True)
    graph = EdgeWeightedGraph(edges, n_u, n_i)
    gen = torch.Generator().manual_seed(7)
    w, xi = torch.randn(9, generator=gen), torch.randn(n_i, 3, generator=gen)
    dense = torch.zeros(n_u, n_i)
    dense[edges[0], edges[1]] = w
    bags = []
    original = conv_module.F.embedding_bag
    monkeypatch.setattr(conv_module.F, 'embedding_bag',
                        lambda *a, **k: (bags.append(1), original(*a, **k))[1])
    _nan_new_empty(monkeypatch)
    got = edge_weighted._spmm(graph._csr(w, True), xi)
    assert bags == [1] and not got.isnan().any() and got[4].eq(0).all()
    torch.testing.assert_close(got, dense @ xi)
    got_t = edge_weighted._spmm(graph._csr(w, False), torch.ones(n_u, 2))
    torch.testing.assert_close(got_t, dense.t() @ torch.ones(n_u, 2))


def test_spmm_fallback_ignores_what_the_new_output_holds(monkeypatch):
    """Where the bags do not apply (here a matrix without entries, which ``embedding_bag``
    refuses) ``_spmm`` writes the sparse kernel's product over whatever the fresh tensor held:
    NaN is not carried into any row. It asks for that product (``fresh=True``), not for
    ``torch.sparse.mm``'s, which fills a zero tensor and copies it into the output."""
    from mmssl_pyg.nn import edge_weighted
    empty = torch.sparse_csr_tensor(torch.zeros(5, dtype=torch.int32),
                                    torch.zeros(0, dtype=torch.int32), torch.zeros(0), (4, 3))
    _nan_new_empty(monkeypatch)
    monkeypatch.setattr(torch.sparse, 'mm', lambda *a, **k: pytest.fail('torch.sparse.mm'))
    got = edge_weighted._spmm(empty, torch.randn(3, 2))
    assert torch.equal(got, torch.zeros(4, 2))
