"""Tests of ``mmssl_pyg/models/mf.py`` (MF-BPR): its documented defaults and its loss, by
hand."""
from __future__ import annotations

import torch

from mmssl_pyg.models.mf import MF
from mmssl_pyg.testing import (
    assert_loss_terms,
    assert_xavier_uniform,
    bpr_and_l2_by_hand,
    hand_batch,
    make_tiny_graph,
)


def test_mf_documented_defaults_repr_and_embeddings():
    graph = make_tiny_graph(0, num_users=12, num_items=9, seed=3)
    model = MF(graph)
    assert (model.embedding_dim, model.reg_weight) == (64, 1e-4)
    assert repr(model) == 'MF(12 users, 9 items, embedding_dim=64)'
    user, item = model.get_embedding()
    assert user is model.user_emb.weight and item is model.item_emb.weight
    assert user.shape == (12, 64) and item.shape == (9, 64)
    assert_xavier_uniform(user)
    assert_xavier_uniform(item)


def test_mf_loss_terms_by_hand():
    """``-mean log sigmoid(e_u.e_i - e_u.e_j)`` and ``reg_weight * sum ||e||^2 / (2 B)``."""
    graph = make_tiny_graph(0, num_users=12, num_items=9, seed=3)
    torch.manual_seed(0)
    model = MF(graph, embedding_dim=3, reg_weight=0.5)
    out = model.loss(hand_batch())
    eu, ei = model.user_emb.weight.tolist(), model.item_emb.weight.tolist()
    assert_loss_terms(out, *bpr_and_l2_by_hand(eu, ei, eu, ei, 0.5))
