"""The content-scale option of Eqs. 10 and 12 (``mix_scale`` / ``fusion_scale``, issue 15):
``'unit'`` is the paper's sum of unit-norm terms, ``'relative'`` gives each term the mean row
norm of the collaborative table it is added to. Expected values are computed by hand."""
import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.adjacency import BipartiteAdjacency
from mmssl_pyg.nn.conv import BipartiteConv
from mmssl_pyg.nn.encoder import content_scale, fuse_modalities, high_order_connectivity


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


def _graph():
    g = torch.Generator().manual_seed(0)
    users = torch.arange(12).repeat_interleave(3)
    items = torch.randint(0, 10, (users.numel(),), generator=g)
    ei = torch.stack([users, items])
    feats = {'image': torch.rand(10, 5, generator=g), 'audio': torch.rand(10, 4, generator=g)}
    return RecGraph(12, 10, ei, ei[:, :6], ei[:, 6:12], feats, 'toy')


def test_mmssl_fusion_scale_relative_matches_the_formula():
    """Eq. 12 in the model: e* = E_bar + omega * mean||E_bar|| * sum_m normalize(u^m)."""
    graph = _graph()
    embs = {}
    for scale in ('unit', 'relative'):
        torch.manual_seed(0)
        embs[scale] = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.2,
                            fusion_scale=scale, fusion_weight=0.5).eval().encode()
    e = embs['relative']
    unit = sum(F.normalize(u, dim=1) for u in e.user_modal)
    s = e.user_graph.norm(dim=1).mean()
    assert torch.allclose(e.user, e.user_graph + 0.5 * s * unit, atol=1e-6)
    assert torch.allclose(embs['unit'].user, e.user_graph + 0.5 * unit, atol=1e-6)
    assert torch.equal(embs['unit'].user_graph, e.user_graph)  # Eq. 10 is untouched


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


def test_scale_options_are_checked_with_the_choices():
    graph = _graph()
    with pytest.raises(ValueError, match="option 'fusion_scale' expects one of unit, relative"):
        MMSSL(graph, embedding_dim=8, num_heads=2, fusion_scale='learned')
    with pytest.raises(ValueError, match="option 'mix_scale' expects one of unit, relative"):
        MMSSL(graph, embedding_dim=8, num_heads=2, mix_scale='id')


def test_cli_option_rule_names_the_choices():
    from mmssl_pyg.training.options import model_option_rules
    rules = model_option_rules(MMSSL)
    assert rules['fusion_scale'].describe() == 'one of unit, relative'
    assert rules['mix_scale'].describe() == 'one of unit, relative'
