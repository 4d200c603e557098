"""The contract every registered model keeps (mmssl_pyg/models/base.py): shapes of
``get_embedding``, ``repr``, the loss dictionary, a state_dict round trip and ``recommend``."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch

from mmssl_pyg.models import MODELS

#: small sizes so every model builds in milliseconds (options of the model's own signature)
SMALL = {'embedding_dim': 8, 'knn_k': 4, 'num_heads': 2, 'topk_rate': 0.1}


def _build(name: str, graph, seed: int = 0):
    import inspect
    cls = MODELS[name]
    takes = inspect.signature(cls.__init__).parameters
    torch.manual_seed(seed)
    return cls(graph, **{k: v for k, v in SMALL.items() if k in takes})


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_model_keeps_the_contract(name, tiny_graph):
    graph = tiny_graph
    model = _build(name, graph)
    assert repr(model).startswith(type(model).__name__)
    model.eval()
    with torch.no_grad():
        user, item = model.get_embedding()
    assert user.shape[0] == graph.num_users and item.shape[0] == graph.num_items
    assert user.dim() == item.dim() == 2 and user.shape[1] == item.shape[1]
    assert torch.isfinite(user).all() and torch.isfinite(item).all()

    if getattr(model, 'trainable', True):
        model.train()
        batch = tiny_batch(graph)
        if model.has_critic:
            critic = model.critic_loss(batch)
            assert critic['loss'].dim() == 0 and torch.isfinite(critic['loss'])
        out = model.loss(batch)
        assert 'loss' in out and out['loss'].dim() == 0 and torch.isfinite(out['loss'])
        out['loss'].backward()
        assert any(p.grad is not None for p in model.model_parameters())
        model.on_epoch_end(1)

    # state_dict round trip: a fresh model (other seed) given the state scores alike
    other = _build(name, graph, seed=1)
    other.load_state_dict(model.state_dict())
    model.eval()
    other.eval()
    with torch.no_grad():
        a, b = model.get_embedding(), other.get_embedding()
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])

    users = torch.tensor([0, 3, 5])
    rowptr, col = graph.train_rows()
    with torch.no_grad():
        top, scores = model.recommend(users, k=4, exclude_rowptr=rowptr, exclude_col=col,
                                      return_scores=True)
    assert top.shape == scores.shape == (3, 4)
    for r, u in enumerate(users.tolist()):
        seen = set(col[rowptr[u]:rowptr[u + 1]].tolist())
        assert not seen & set(top[r].tolist())  # training items are excluded
        assert torch.all(scores[r, :-1] >= scores[r, 1:])  # best first


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_models_fast_backward_gives_autograds_gradients(name, tiny_graph, monkeypatch):
    """The cached-transpose backward of ``sparse_matmul`` (``adj_rev``) gives every model the
    gradients autograd computes through ``torch.sparse.mm`` itself: a model that hands
    BipartiteConv a matrix that is not ``adj.T`` (MMGCN's mean aggregations did, 1/|N_i| where
    the transpose has 1/|N_u|; PROTOCOL.md's amendment of 2026-12-07 on MMGCN) fails here."""
    from mmssl_pyg.nn import conv as conv_module
    model = _build(name, tiny_graph)
    if not getattr(model, 'trainable', True):
        pytest.skip(f'{name} has no parameters')
    model.train()
    batch = tiny_batch(tiny_graph)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]

    def gradients():
        torch.manual_seed(5)  # the same dropout, Gumbel noise and augmented views each time
        model.on_epoch_start(1)
        return torch.autograd.grad(model.loss(batch)['loss'], params, allow_unused=True)

    fast = gradients()
    calls = []

    def plain(adj, adj_rev, x):
        calls.append(adj)
        return torch.sparse.mm(adj, x)  # autograd's own backward, no adj_rev

    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply', plain)
    slow = gradients()
    for (pname, _), a, b in zip(named, fast, slow):
        assert (a is None) == (b is None), pname
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), pname
    if name in ('lightgcn', 'mmgcn', 'sgl', 'bm3', 'freedom', 'lattice', 'mmssl'):
        assert calls, f'{name} never took the cached-transpose path'
