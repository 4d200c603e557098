"""Issue 24's fused propagations against the straightforward per-modality computations on a
tiny graph: values and gradients."""
from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_graph

from mmssl_pyg.data.graph import unique_edges
from mmssl_pyg.nn.adjacency import BipartiteAdjacency
from mmssl_pyg.nn.conv import BipartiteConv, is_sparse_tensor_available
from mmssl_pyg.nn.encoder import collaborative_modality_embeddings

LAYOUTS = ['csr', 'coo', 'edge_index'] + (['sparse_tensor'] if is_sparse_tensor_available()
                                          else [])


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
