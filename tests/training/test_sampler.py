"""Shared helpers of the training tests (tiny synthetic graphs, a tiny MMSSL-format dataset),
and the sampler's tests."""
from __future__ import annotations

import math

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.testing import synthetic_graph
from mmssl_pyg.training import BPRSampler


def _train_keys(graph):
    ei = graph.train_edge_index
    return set((ei[0] * graph.num_items + ei[1]).tolist())


def test_batches_follow_the_protocol():
    graph = synthetic_graph(num_users=50, num_items=30)
    sampler = BPRSampler(graph, batch_size=16, seed=0)
    assert len(sampler) == math.ceil(graph.num_train / 16)
    keys = _train_keys(graph)
    active = set(graph.train_edge_index[0].tolist())
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for b in batches:
        assert len(b) == 16 and b.users.unique().numel() == 16  # distinct users
        assert set(b.users.tolist()) <= active
        us, ps, ns = b.users.tolist(), b.pos.tolist(), b.neg.tolist()
        assert all(u * 30 + p in keys for u, p in zip(us, ps))        # observed positives
        assert all(u * 30 + n not in keys for u, n in zip(us, ns))    # unobserved negatives
        assert all(0 <= n < 30 for n in ns)


def test_small_graph_batch_is_every_active_user_and_dense_users_are_skipped():
    # user 0 has every item (no negative exists), user 3 has none
    ei = torch.tensor([[0, 0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 0, 1, 3]])
    empty = torch.zeros(2, 0, dtype=torch.long)
    graph = RecGraph(4, 4, ei, empty, empty)
    sampler = BPRSampler(graph, batch_size=1024, seed=0)
    # the pool of users to draw from, checked before sampling: a pool that let user 0 in
    # would make the rejection sampler loop forever on its negative instead of failing here
    assert sampler.users.tolist() == [1, 2]
    batch = sampler.sample()
    assert sorted(batch.users.tolist()) == [1, 2]
    for u, n in zip(batch.users.tolist(), batch.neg.tolist()):
        assert (u, n) not in {(1, 0), (2, 1), (2, 3)}


def test_negatives_are_uniform_over_unobserved_items():
    ei = torch.tensor([[0, 0], [0, 1]])  # user 0 saw items 0 and 1 of 6
    empty = torch.zeros(2, 0, dtype=torch.long)
    sampler = BPRSampler(RecGraph(1, 6, ei, empty, empty), seed=0)
    neg = sampler.sample_negatives(torch.zeros(20000, dtype=torch.long))
    counts = torch.bincount(neg, minlength=6).float() / 20000
    assert counts[:2].sum() == 0
    assert torch.allclose(counts[2:], torch.full((4,), 0.25), atol=0.02)


def test_seed_and_state_dict_reproduce_batches():
    graph = synthetic_graph()
    a, b = BPRSampler(graph, 8, seed=3), BPRSampler(graph, 8, seed=3)
    for x, y in zip(a, b):
        assert torch.equal(x.users, y.users) and torch.equal(x.pos, y.pos)
        assert torch.equal(x.neg, y.neg)
    state = a.state_dict()
    expected = a.sample()
    c = BPRSampler(graph, 8, seed=99)
    c.load_state_dict(state)
    got = c.sample()
    assert torch.equal(got.users, expected.users) and torch.equal(got.neg, expected.neg)
    assert not torch.equal(BPRSampler(graph, 8, seed=4).sample().users,
                           BPRSampler(graph, 8, seed=3).sample().users)


def test_batches_per_epoch_override_and_empty_graph_error():
    graph = synthetic_graph()
    assert len(BPRSampler(graph, 8, batches_per_epoch=3)) == 3
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match='no training interactions'):
        BPRSampler(RecGraph(3, 3, empty, empty, empty, name='void'))


def test_positives_are_uniform_over_the_users_training_items():
    # user 0 has items {1, 4, 6, 7} of 10; user 1 has {0}: every batch holds both users
    ei = torch.tensor([[0, 0, 0, 0, 1], [1, 4, 6, 7, 0]])
    empty = torch.zeros(2, 0, dtype=torch.long)
    sampler = BPRSampler(RecGraph(2, 10, ei, empty, empty), batch_size=2, seed=0)
    pos = []
    for _ in range(4000):
        b = sampler.sample()
        assert sorted(b.users.tolist()) == [0, 1]
        pos.append(b.pos[b.users == 0])
        assert b.pos[b.users == 1].tolist() == [0]
    counts = torch.bincount(torch.cat(pos), minlength=10).float() / 4000
    assert counts[[0, 2, 3, 5, 8, 9]].sum() == 0  # only real positives
    assert torch.allclose(counts[[1, 4, 6, 7]], torch.full((4,), 0.25), atol=0.03)


def test_sampler_defaults_and_error_messages():
    graph = synthetic_graph(num_users=50, num_items=30)
    default = BPRSampler(graph)
    assert default.batch_size == 1024 and len(default) == math.ceil(graph.num_train / 1024)
    explicit = BPRSampler(graph, batch_size=1024, seed=0)
    a, b = default.sample(), explicit.sample()
    assert torch.equal(a.users, b.users) and torch.equal(a.pos, b.pos)
    assert torch.equal(a.neg, b.neg)
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(ValueError) as err:
        BPRSampler(RecGraph(3, 3, empty, empty, empty, name='void'))
    assert str(err.value) == "dataset 'void' has no training interactions to sample"
    full = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])  # both users saw both items
    with pytest.raises(ValueError) as err:
        BPRSampler(RecGraph(2, 2, full, empty, empty, name='dense'))
    assert str(err.value) == ("dataset 'dense': no user has both a training item and an "
                              'unobserved item, so no BPR triple can be drawn')
