r"""Tests of ``mmssl_pyg/nn/encoder.py``.

Tests written for mutants of ``make mutate`` that survived in ``models/mmssl.py``,
``nn/encoder.py`` and ``nn/losses.py``: the model's argument checks and their defaults, its
wiring of the scale options and of ``Batch.final``, the shared adjacency, and the WGAN-GP
losses with their defaults. Every expected value is derived here (by hand, from a dense
computation or from the documented contract). See ``benchmarks/results/mutation/report.md``.

The cold-item option of Eq. 2 (``cold_items``, issue 15): items without training
interactions get their own projected features instead of a zero :math:`\mathbf{i}^m`.
Expected values are computed by hand or from the paper's formula.

The content-scale option of Eqs. 10 and 12 (``mix_scale`` / ``fusion_scale``, issue 15):
``'unit'`` is the paper's sum of unit-norm terms, ``'relative'`` gives each term the mean row
norm of the collaborative table it is added to. Expected values are computed by hand.

Issue 24's fused propagations against the straightforward per-modality computations on a
tiny graph: values and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.data.graph import unique_edges
from mmssl_pyg.nn import BipartiteConv
from mmssl_pyg.nn.adjacency import BipartiteAdjacency
from mmssl_pyg.nn.conv import is_sparse_tensor_available
from mmssl_pyg.nn.encoder import (
    cold_item_modal,
    collaborative_modality_embeddings,
    content_scale,
    fuse_modalities,
    high_order_connectivity,
    modality_aware_views,
)
from mmssl_pyg.testing import _dense_adj, _sym, make_tiny_graph


# --------------------------------------------------------------------------- encoder
class _CountingAdjacency:
    """An adjacency that counts the aggregations run over it."""

    def __init__(self, adj: BipartiteAdjacency):
        self.adj, self.calls = adj, 0

    def to_users(self, conv, x):
        self.calls += 1
        return self.adj.to_users(conv, x)

    def to_items(self, conv, x):
        self.calls += 1
        return self.adj.to_items(conv, x)


LAYOUTS = ['csr', 'coo', 'edge_index'] + (['sparse_tensor'] if is_sparse_tensor_available()
                                          else [])


def test_modality_aware_views_aggregate_a_shared_graph_once():
    """Eq. 8 per modality graph; modalities that share one graph object share its
    aggregation (one ``to_users`` and one ``to_items`` per distinct graph)."""
    torch.manual_seed(0)
    e1 = torch.tensor([[0, 0, 1, 2, 3], [0, 1, 1, 2, 4]])
    e2 = torch.tensor([[0, 1, 2, 3, 3], [3, 0, 4, 1, 2]])
    shared = _CountingAdjacency(BipartiteAdjacency(e1, 4, 5, 'sym', 'coo'))
    other = _CountingAdjacency(BipartiteAdjacency(e2, 4, 5, 'sym', 'coo'))
    ux, ix = torch.randn(4, 3), torch.randn(5, 3)
    user_views, item_views = modality_aware_views([shared, other, shared], BipartiteConv(),
                                                  ux, ix)
    assert (shared.calls, other.calls) == (2, 2)
    for k, e in enumerate((e1, e2, e1)):
        a = _sym(_dense_adj(e, 4, 5))
        assert torch.allclose(user_views[k], a @ ix, atol=1e-6)
        assert torch.allclose(item_views[k], a.t() @ ux, atol=1e-6)


def test_cold_item_modal_by_hand():
    item_m = [torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])]  # item 1 is cold
    feats = [torch.tensor([[9.0, 9.0], [0.0, -2.0], [7.0, 7.0]])]
    cold = torch.tensor([1])
    assert torch.equal(cold_item_modal(item_m, feats, cold, 'none')[0], item_m[0])
    out = cold_item_modal(item_m, feats, cold, 'features')[0]
    # warm rows untouched; the cold row is unit(F_1) = (0, -1) times the warm mean length 3
    assert torch.equal(out[[0, 2]], item_m[0][[0, 2]])
    assert torch.allclose(out[1], torch.tensor([0.0, -3.0]))
    # no cold item: the input itself
    assert cold_item_modal(item_m, feats, torch.tensor([], dtype=torch.long), 'features')[0] \
        is item_m[0]
    # the warm mean counts only warm rows, even when a cold row is not zero on input
    item_m2 = [torch.tensor([[6.0, 8.0], [1.0, 0.0], [0.0, 0.0]])]  # one warm item: length 10
    out2 = cold_item_modal(item_m2, feats, torch.tensor([1, 2]), 'features')[0]
    assert torch.allclose(out2[1:], torch.tensor([[0.0, -10.0], [10 / 2 ** 0.5, 10 / 2 ** 0.5]]))
    # every item cold: no warm length, so no content (zeros), not a division by zero
    out3 = cold_item_modal(item_m2, feats, torch.tensor([0, 1, 2]), 'features')[0]
    assert torch.equal(out3, torch.zeros(3, 2))


def test_cold_item_features_carry_gradients_to_the_projection_only():
    feats = [torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)]
    item_m = [torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)]  # item 0 cold
    out = cold_item_modal(item_m, feats, torch.tensor([0]), 'features')[0]
    out[0].sum().backward()
    assert feats[0].grad[0].abs().sum() > 0 and feats[0].grad[1].abs().sum() == 0
    assert item_m[0].grad.abs().sum() == 0  # the warm length is a detached scale


def test_content_scale_unit_and_relative_by_hand():
    ref = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # row norms 5 and 1: mean 3
    assert content_scale(ref, 'unit') == 1.0
    s = content_scale(ref.requires_grad_(), 'relative')
    assert float(s) == pytest.approx(3.0)
    assert not s.requires_grad  # a normaliser, not a path for gradients into the ID table


def test_fuse_modalities_relative_is_omega_times_mean_norm_times_unit_terms():
    graph_x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    modal = [torch.tensor([[2.0, 0.0], [0.0, -5.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]
    unit_terms = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # sum of the row-normalised inputs
    paper = fuse_modalities(graph_x, modal, 0.5, 'unit')
    assert torch.allclose(paper, graph_x + 0.5 * unit_terms)
    rel = fuse_modalities(graph_x, modal, 0.5, 'relative')
    assert torch.allclose(rel, graph_x + 0.5 * 3.0 * unit_terms)
    assert torch.equal(fuse_modalities(graph_x, modal, 0.5), paper)  # the paper by default


def test_high_order_connectivity_relative_mix_by_hand():
    """Eq. 10's first layer input: E + mu * mean||E|| * normalize(h), per side."""
    torch.manual_seed(0)
    ei = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]])
    adj = BipartiteAdjacency(ei, 3, 3, 'sym', 'coo')
    conv = BipartiteConv()
    ux, ix, uh, ih = (torch.randn(3, 4) for _ in range(4))
    got = high_order_connectivity(adj, conv, ux, ix, uh, ih, 0.4, 2, 'relative')
    u0 = ux + 0.4 * ux.norm(dim=1).mean() * F.normalize(uh, dim=1)
    i0 = ix + 0.4 * ix.norm(dim=1).mean() * F.normalize(ih, dim=1)
    want = high_order_connectivity(adj, conv, u0, i0, torch.zeros(3, 4), torch.zeros(3, 4),
                                   0.0, 2, 'unit')
    assert torch.allclose(got[0], want[0], atol=1e-6)
    assert torch.allclose(got[1], want[1], atol=1e-6)
    paper = high_order_connectivity(adj, conv, ux, ix, uh, ih, 0.4, 2)
    assert not torch.allclose(paper[0], got[0])


@pytest.mark.parametrize('scale', ['unit', 'relative'])
def test_eqs_10_and_12_equal_their_f_normalize_form_values_and_gradients(scale):
    """Issue 24: Eqs. 10 and 12 normalise with ``unit_rows`` (``F.normalize``'s values, a
    written-out backward). Against the same equations written with ``F.normalize``, a zero
    row included: equal values, gradients to float round-off."""
    torch.manual_seed(0)
    ei = torch.tensor([[0, 0, 1, 2, 3], [0, 1, 1, 2, 0]])
    adj = BipartiteAdjacency(ei, 4, 3, 'sym', 'csr')
    conv = BipartiteConv()
    leaves = [torch.randn(n, 5, requires_grad=True) for n in (4, 3, 4, 3, 4, 4)]
    with torch.no_grad():
        leaves[2][1] = 0.0  # a zero row: F.normalize's eps branch
    ux, ix, uh, ih, m1, m2 = leaves

    def reference():
        s_u, s_i = content_scale(ux, scale), content_scale(ix, scale)
        u, i = high_order_connectivity(adj, conv, ux + 0.3 * s_u * F.normalize(uh, dim=1),
                                       ix + 0.3 * s_i * F.normalize(ih, dim=1),
                                       torch.zeros(4, 5), torch.zeros(3, 5), 0.0, 2)
        s = content_scale(u, scale)
        return u + 0.2 * s * (F.normalize(m1, dim=1) + F.normalize(m2, dim=1)), i

    def current():
        u, i = high_order_connectivity(adj, conv, ux, ix, uh, ih, 0.3, 2, scale)
        return fuse_modalities(u, [m1, m2], 0.2, scale), i

    grads = []
    for fn in (reference, current):
        u, i = fn()
        weights = torch.arange(20.0).view(4, 5), torch.arange(15.0).view(3, 5)
        grads.append(torch.autograd.grad((u * weights[0]).sum() + (i * weights[1]).sum(),
                                         leaves))
        grads[-1] = (u.detach(), i.detach(), *grads[-1])
    for want, got in zip(*grads):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('norm', ['sym', 'row'])
@pytest.mark.parametrize('widths', [(4,), (4, 4), (3, 5, 2)])
def test_eq2_side_by_side_equals_one_product_per_modality(layout, norm, widths):
    graph = make_tiny_graph()
    adj = BipartiteAdjacency(unique_edges(graph.train_edge_index, graph.num_items),
                             graph.num_users, graph.num_items, norm, layout)
    conv = BipartiteConv()
    gen = torch.Generator().manual_seed(len(widths))
    feats = [torch.randn(graph.num_items, w, generator=gen, requires_grad=True) for w in widths]
    # a weighted sum of every output, so every output element has its own gradient
    weights = [torch.randn(n, w, generator=gen) for n in (graph.num_users, graph.num_items)
               for w in widths]

    def run(fn):
        for f in feats:
            f.grad = None
        user, item = fn()
        sum((x * w).sum() for x, w in zip(user + item, weights)).backward()
        return [x.detach() for x in user + item], [f.grad.clone() for f in feats]

    fused, fused_grad = run(lambda: collaborative_modality_embeddings(adj, conv, feats))

    def reference():
        user = [adj.to_users(conv, f) for f in feats]
        return user, [adj.to_items(conv, u) for u in user]
    ref, ref_grad = run(reference)
    assert [x.shape for x in fused] == [x.shape for x in ref]
    for a, b in zip(fused + fused_grad, ref + ref_grad):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in fused_grad)
