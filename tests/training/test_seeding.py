"""The paired protocol: paired initialisation, the paired-difference interval and the
accuracy table built from unit files."""
from __future__ import annotations

import math

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models import GRCN, MF, MMSSL, LightGCN
from mmssl_pyg.training.seeding import id_embedding_tables, pair_id_embeddings


def _graph(num_users=60, num_items=40, modalities=2) -> RecGraph:
    g = torch.Generator().manual_seed(0)
    users = torch.arange(num_users).repeat_interleave(4)
    items = torch.randint(num_items, (users.numel(),), generator=g)
    ei = torch.unique(torch.stack([users, items]), dim=1)
    feats = {f'm{k}': torch.randn(num_items, 6, generator=g) for k in range(modalities)}
    return RecGraph(num_users, num_items, ei, ei[:, :10], ei[:, 10:20], feats, name='toy')


def test_same_seed_same_id_embeddings_across_models():
    graph = _graph()
    torch.manual_seed(0)
    lightgcn = LightGCN(graph, embedding_dim=32)
    torch.manual_seed(1)  # another global state: pairing must not depend on it
    mmssl = MMSSL(graph, embedding_dim=32)
    torch.manual_seed(0)
    mf = MF(graph, embedding_dim=32)
    # MMSSL draws other parameters between its ID tables: unpaired they differ
    assert not torch.equal(lightgcn.user_emb.weight, mmssl.user_emb.weight)
    state = torch.get_rng_state()
    for model in (lightgcn, mmssl):
        assert pair_id_embeddings(model, 5) == ['user', 'item']
    assert pair_id_embeddings(mf, 6) == ['user', 'item']
    assert torch.equal(torch.get_rng_state(), state)  # the global streams are untouched
    for role in ('user', 'item'):
        a = id_embedding_tables(lightgcn)[role]
        assert torch.equal(a, id_embedding_tables(mmssl)[role])
        assert not torch.equal(a, id_embedding_tables(mf)[role])  # another seed
    bound = math.sqrt(6 / (graph.num_users + 32))
    assert float(lightgcn.user_emb.weight.detach().abs().max()) <= bound  # still Xavier uniform


def test_pairing_keeps_each_models_rule_and_refuses_a_mismatch():
    graph = _graph(num_users=200, num_items=150)
    grcn = GRCN(graph, embedding_dim=16)
    assert grcn.id_init == 'xavier_normal' and pair_id_embeddings(grcn, 3) == ['user', 'item']
    bound = math.sqrt(6 / (graph.num_users + 16))
    assert float(grcn.user_id.weight.detach().abs().max()) > bound  # normal, not uniform
    model = LightGCN(graph, embedding_dim=16)
    with torch.no_grad():
        model.user_emb.weight.mul_(10)  # e.g. a model whose initialisation changed
    with pytest.raises(ValueError, match=r'LightGCN user ID table does not look '
                                         r'xavier_uniform-initialised.*id_init'):
        pair_id_embeddings(model, 0)
