"""Baselines (MF, SGL, VBPR, MMGCN, GRCN, LATTICE, FREEDOM, BM3): each trains with the shared
trainer on the bundled TikTok sample, improves its validation Recall@20 to at least three
times that of a random ranking, and each distinctive piece does what its paper says.

Against popularity (items ranked by training degree; on tiktok-mini validation Recall@20
0.0625, test 0.0497): 99% of the held-out pairs belong to users with one to four training
items, so popularity is a strong reference here. Measured at the commit that added this
note (CPU, seed 2023, each model's tiktok-mini preset trained to early stopping, test
Recall@20 of the validation-selected epoch): LATTICE 0.0663 and FREEDOM 0.0602 beat it and
are tested to (``test_content_graph_baselines_beat_popularity``); LightGCN 0.0346, BM3
0.0256, MF 0.0181, VBPR 0.0181, GRCN 0.0181 and SGL 0.0120 do not, and are not claimed to."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.models.grcn import GRCN
from mmssl_pyg.testing import (
    HAND_BATCH,
    assert_loss_terms,
    bpr_and_l2_by_hand,
    hand_batch,
    make_tiny_graph,
)


def test_grcn_refined_edge_weights():
    torch.manual_seed(0)
    graph = make_tiny_graph(2)
    model = GRCN(graph).eval()
    u, i = graph.train_edge_index
    with torch.no_grad():
        w_iu, w_ui = model.refined_edge_weight()
        assert w_iu.shape == w_ui.shape == (graph.num_train,)
        assert (w_iu >= 0).all() and (w_ui >= 0).all()  # ReLU pruning
        # Not the uniform (mean-normalised) graph.
        deg_u = torch.bincount(u, minlength=graph.num_users).float()
        assert not torch.allclose(w_iu, 1.0 / deg_u[u], atol=1e-3)
        # The weights come from the content: other features, other weights.
        saved = model.feat_0.clone()
        model.feat_0.copy_(torch.randn_like(saved))
        w_iu2, w_ui2 = model.refined_edge_weight()
        model.feat_0.copy_(saved)
        assert not torch.allclose(w_iu, w_iu2)
        assert not torch.allclose(w_ui, w_ui2)
        # With all confidences 1 the weight is the max over modalities of the affinities,
        # each a softmax over the receiving user's items (summing to one per user).
        model.confidence.fill_(1.0)
        w_iu3, _ = model.refined_edge_weight()
        per_modality = [model._modality(m, f)[2] for m, f in
                        enumerate((model.feat_0, model.feat_1))]
        assert torch.allclose(w_iu3, torch.stack(per_modality, 1).max(1).values)
        for a in per_modality:
            sums = torch.zeros(graph.num_users).index_add_(0, u, a)
            assert torch.allclose(sums[deg_u > 0], torch.ones(int((deg_u > 0).sum())))
    # Pruning: a negative confidence removes the edges it sends.
    with torch.no_grad():
        model.confidence.fill_(-1.0)
        w_iu4, w_ui4 = model.refined_edge_weight()
    assert (w_iu4 == 0).all() and (w_ui4 == 0).all()


def _softmax_by_group(score: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Softmax of the edges' scores among the edges of the same node, one node at a time."""
    out = torch.zeros_like(score)
    for node in group.unique().tolist():
        mask = group == node
        e = torch.exp(score[mask] - score[mask].max())
        out[mask] = e / e.sum()
    return out


def _grcn_by_hand(model: GRCN, graph) -> tuple:
    """GRCN's forward pass with dense per-edge tensors and explicit loops (the paper's
    equations; no EdgeWeightedGraph): ``(user, item, w_iu, w_ui)``."""
    u, i = graph.train_edge_index
    nu, ni = graph.num_users, graph.num_items
    normalize = lambda x: x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)  # noqa: E731
    users, items, w_iu, w_ui = [], [], [], []
    for m, lin in enumerate(model.content):
        x = getattr(model, f'feat_{m}')
        h = x @ lin.weight.t() + lin.bias
        f = normalize(torch.where(h > 0, h, 0.01 * h))  # LeakyReLU, slope 0.01
        p = normalize(model.preference[m])
        for _ in range(model.num_routing):
            a = _softmax_by_group((p[u] * f[i]).sum(1), u)
            p = normalize(p + torch.zeros(nu, f.size(1)).index_add(0, u, a[:, None] * f[i]))
        score = (p[u] * f[i]).sum(1)
        a_iu, a_ui = _softmax_by_group(score, u), _softmax_by_group(score, i)
        users.append(p + torch.zeros(nu, f.size(1)).index_add(0, u, a_iu[:, None] * f[i]))
        items.append(f + torch.zeros(ni, f.size(1)).index_add(0, i, a_ui[:, None] * p[u]))
        w_iu.append(a_iu * model.confidence[nu + i, m])
        w_ui.append(a_ui * model.confidence[u, m])
    w_iu = torch.stack(w_iu, 1).max(1).values.clamp(min=0)
    w_ui = torch.stack(w_ui, 1).max(1).values.clamp(min=0)
    xu, xi = normalize(model.user_id.weight), normalize(model.item_id.weight)
    su, si = xu, xi
    for _ in range(model.num_layers):  # sum (not mean) over the layers
        xu, xi = (torch.zeros_like(xu).index_add(0, u, w_iu[:, None] * xi[i]),
                  torch.zeros_like(xi).index_add(0, i, w_ui[:, None] * xu[u]))
        su, si = su + xu, si + xi
    return torch.cat([su, *users], 1), torch.cat([si, *items], 1), w_iu, w_ui


def test_grcn_forward_and_loss_by_hand():
    graph = make_tiny_graph(2, num_users=10, num_items=12, seed=4)
    torch.manual_seed(0)
    model = GRCN(graph, embedding_dim=3, latent_dim=4, num_routing=2, num_layers=2,
                 reg_weight=0.5, feature_norm='none')
    with torch.no_grad():  # some negative confidences, so the ReLU prunes some edges
        model.confidence.copy_(torch.randn(22, 2) + 0.3)
        for lin in model.content:
            torch.nn.init.normal_(lin.bias)
        want = _grcn_by_hand(model, graph)
        got = model._forward()
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5)
    assert (want[2] == 0).any() and (want[2] > 0).any()
    w_iu, w_ui = model.refined_edge_weight()
    assert torch.allclose(w_iu, want[2], atol=1e-6) and torch.allclose(w_ui, want[3], atol=1e-6)
    out = model.loss(hand_batch())
    ids = (model.user_id.weight.tolist(), model.item_id.weight.tolist())
    bpr, reg = bpr_and_l2_by_hand(want[0].tolist(), want[1].tolist(), *ids, 0.5)
    users = HAND_BATCH[0]
    prefs = sum(float(p[a].detach().pow(2).sum()) for p in model.preference for a in users)
    assert_loss_terms(out, bpr, reg + 0.5 * prefs / (2 * len(users)))


def test_grcn_documented_defaults_repr_and_initialisation():
    graph = make_tiny_graph(2, num_users=12, num_items=15, seed=3)
    torch.manual_seed(0)
    model = GRCN(graph)
    assert (model.embedding_dim, model.latent_dim, model.num_routing, model.num_layers,
            model.reg_weight) == (64, 64, 3, 2, 1e-4)
    assert repr(model) == ("GRCN(12 users, 15 items, modalities=['m0', 'm1'], "
                           'embedding_dim=64, latent_dim=64)')
    assert GRCN.id_init == 'xavier_normal'
    for p, fans in ((model.user_id.weight, 76), (model.item_id.weight, 79),
                    (model.confidence, 29), (model.preference[0], 76)):
        assert p.std().item() == pytest.approx(math.sqrt(2 / fans), rel=0.35)  # Xavier-normal
    assert [tuple(lin.weight.shape) for lin in model.content] == [(64, 8), (64, 5)]
    assert all(lin.bias.abs().sum() == 0 for lin in model.content)
    # features l2-normalised by default
    assert torch.allclose(model.feat_1.norm(dim=1), torch.ones(15))
    u, i = model.get_embedding()
    assert u.shape == (12, 64 + 2 * 64) and i.shape == (15, 64 + 2 * 64)


def test_grcn_matches_the_authors_code_with_the_routing_the_paper_describes():
    """The authors' GRCN (weiyinwei/GRCN ``Model_routing.py`` with ``GATConv.py`` and
    ``SAGEConv.py``; ``main.py`` defaults: ``aggr_mode='add'``, ``has_norm``, no activation,
    ``weight_mode='confid'``, ``fusion_mode='concat'``, hard pruning), transcribed with PyG's
    edge-list message passing and fed this model's parameters, gives the same representations
    and refined weights once its routing loop is fed item->user edges. As published, the loop
    gets the user->item ``edge_index`` (rows ``user, item + n_users``), so its messages reach
    items only and ``x_hat_1[:num_user]`` is zero: the preferences are never routed."""
    from torch_geometric.nn.conv import MessagePassing
    from torch_geometric.utils import softmax

    class AuthorsGATConv(MessagePassing):
        def __init__(self):
            super().__init__(aggr='add')

        def forward(self, x, edge_index):
            return self.propagate(edge_index, x=x)

        def message(self, edge_index_i, x_i, x_j, size_i):
            self.alpha = softmax((x_i * x_j).sum(-1), edge_index_i, num_nodes=size_i)
            return x_j * self.alpha.view(-1, 1)

    class AuthorsSAGEConv(MessagePassing):
        def __init__(self):
            super().__init__(aggr='add')

        def forward(self, x, edge_index, weight_vector):
            self.weight_vector = weight_vector
            return self.propagate(edge_index, x=x)

        def message(self, x_j):
            return x_j * self.weight_vector

    graph = make_tiny_graph(2, num_users=10, num_items=12, seed=4)
    nu = graph.num_users
    torch.manual_seed(0)
    model = GRCN(graph, embedding_dim=3, latent_dim=4, num_routing=2, num_layers=2,
                 feature_norm='none')
    u, i = graph.train_edge_index
    edge_index = torch.stack([u, i + nu])
    both = torch.cat([edge_index, edge_index[[1, 0]]], 1)
    with torch.no_grad():
        model.confidence.copy_(torch.randn_like(model.confidence) + 0.3)  # some pruned
        for lin in model.content:
            torch.nn.init.normal_(lin.bias)
        reps, alphas = [], []
        for m, lin in enumerate(model.content):  # CGCN.forward
            conv = AuthorsGATConv()
            features = F.normalize(F.leaky_relu(lin(getattr(model, f'feat_{m}'))))
            preference = F.normalize(model.preference[m])
            published = conv(torch.cat([preference, features]), edge_index)
            assert published[:nu].abs().max() == 0 and published[nu:].abs().max() > 0
            for _ in range(model.num_routing):
                x_hat_1 = conv(torch.cat([preference, features]), edge_index[[1, 0]])
                preference = F.normalize(preference + x_hat_1[:nu])
            x = torch.cat([preference, features])
            reps.append(x + conv(x, both))
            alphas.append(conv.alpha.view(-1, 1))
        confidence = torch.cat([model.confidence[edge_index[0]],
                                model.confidence[edge_index[1]]])  # the sender's
        weight = torch.relu((torch.cat(alphas, 1) * confidence).max(1).values).view(-1, 1)
        x = F.normalize(torch.cat([model.user_id.weight, model.item_id.weight]))  # EGCN
        x_hat_1 = AuthorsSAGEConv()(x, both, weight)
        x_hat_2 = AuthorsSAGEConv()(x_hat_1, both, weight)
        want = torch.cat([x + x_hat_1 + x_hat_2, *reps], 1)
        user, item, w_iu, w_ui = model._forward()
    assert torch.allclose(torch.cat([user, item]), want, atol=1e-5)
    num_edges = u.numel()
    assert torch.allclose(w_ui, weight[:num_edges, 0], atol=1e-6)  # user -> item messages
    assert torch.allclose(w_iu, weight[num_edges:, 0], atol=1e-6)  # item -> user messages
    assert (weight == 0).any() and (weight > 0).any()
