"""Tests of ``mmssl_pyg/models/bm3.py``.

Baselines (MF, SGL, VBPR, MMGCN, GRCN, LATTICE, FREEDOM, BM3): each trains with the shared
trainer on the bundled TikTok sample, improves its validation Recall@20 to at least three
times that of a random ranking, and each distinctive piece does what its paper says.

Against popularity (items ranked by training degree; on tiktok-mini validation Recall@20
0.0625, test 0.0497): 99% of the held-out pairs belong to users with one to four training
items, so popularity is a strong reference here. Measured at the commit that added this
note (CPU, seed 2023, each model's tiktok-mini preset trained to early stopping, test
Recall@20 of the validation-selected epoch): LATTICE 0.0663 and FREEDOM 0.0602 beat it and
are tested to (``test_content_graph_baselines_beat_popularity``); LightGCN 0.0346, BM3
0.0256, MF 0.0181, VBPR 0.0181, GRCN 0.0181 and SGL 0.0120 do not, and are not claimed to.

BM3 against the authors' definition (docs/baselines-audit.md): the loss recomputed by hand
on a tiny graph, the stop-gradient placement, the training pairs (observed interactions,
drawn uniformly, as MMRec's loader without negatives gives them) and the trainable
features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmssl_pyg.data import RecGraph, load_dataset
from mmssl_pyg.models import Batch
from mmssl_pyg.models.bm3 import BM3
from mmssl_pyg.testing import _batches, assert_xavier_uniform, make_tiny_graph, tiny_batch
from mmssl_pyg.training import TrainConfig, Trainer


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _one_minus_mean_cos(a: np.ndarray, b: np.ndarray) -> float:
    cos = [x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)]
    return 1.0 - float(np.mean(cos))


def _hand_loss(model: BM3, graph: RecGraph, users, items, reg_weight, cl_weight) -> dict:
    """The BM3 objective written out with dense numpy arrays (tiny graph): one LightGCN layer
    over the symmetrically normalised user-item matrix, the item ID embedding added to the
    item output, a linear predictor, linear projections of the features, no dropout."""
    nu, ni = graph.num_users, graph.num_items
    r = np.zeros((nu, ni))
    r[graph.train_edge_index[0].numpy(), graph.train_edge_index[1].numpy()] = 1.0
    du, di = r.sum(1), r.sum(0)
    a = r / np.sqrt(np.outer(np.where(du > 0, du, 1), np.where(di > 0, di, 1)))
    eu, ei = _np(model.user_emb.weight), _np(model.item_emb.weight)
    u = (eu + a @ ei) / 2
    i = (ei + a.T @ eu) / 2 + ei
    w, b = _np(model.predictor.weight), _np(model.predictor.bias)

    def pred(x):
        return x @ w.T + b

    ub, ib = u[users], i[items]
    rec = _one_minus_mean_cos(pred(ub), ib) + _one_minus_mean_cos(pred(ib), ub)
    align = mask = 0.0
    for j, lin in enumerate(model.projections):
        feat = _np(getattr(model, f'feat_{j}'))[items]
        h = feat @ _np(lin.weight).T + _np(lin.bias)
        align += _one_minus_mean_cos(pred(h), ib)
        mask += _one_minus_mean_cos(pred(h), h)
    reg = reg_weight * (np.linalg.norm(u) + np.linalg.norm(i)) / ni
    return {'rec': rec, 'align': align, 'mask': mask, 'reg': reg,
            'loss': rec + cl_weight * (align + mask) + reg}


def test_bm3_dropout_views_and_no_negatives():
    torch.manual_seed(0)
    graph = make_tiny_graph(2)
    model = BM3(graph, dropout=0.5)
    x = torch.randn(40, 16, requires_grad=True)
    model.train()
    v1, v2 = model.target_view(x), model.target_view(x)
    assert not torch.equal(v1, v2)  # two draws of the dropout view differ in training
    assert not v1.requires_grad  # targets are stop-gradient
    assert 0.3 < (v1 == 0).float().mean() < 0.7
    model.eval()
    assert torch.equal(model.target_view(x), x.detach())
    assert torch.equal(model.target_view(x), model.target_view(x))
    # The loss ignores the negatives.
    model.train()
    batch = next(_batches(graph, 8, torch.Generator().manual_seed(0)))
    other = Batch(batch.users, batch.pos, torch.randint(0, graph.num_items, batch.neg.shape))
    torch.manual_seed(1)
    a = model.loss(batch)['loss']
    torch.manual_seed(1)
    b = model.loss(other)['loss']
    assert torch.equal(a, b)
    assert set(model.loss(batch)) >= {'loss', 'rec', 'align', 'mask', 'reg'}


@pytest.mark.parametrize('train_features', [True, False])
def test_loss_matches_the_objective_computed_by_hand(train_features):
    torch.manual_seed(0)
    graph = make_tiny_graph(2)
    model = BM3(graph, embedding_dim=6, dropout=0.0, reg_weight=0.3, cl_weight=1.5,
                feature_norm='none', train_features=train_features, pair_sampling='batch')
    for lin in [model.predictor, *model.projections]:  # non-zero biases enter the check
        torch.nn.init.normal_(lin.bias)
    model.train()
    batch = tiny_batch(graph, num_users=10)
    got = model.loss(batch)
    want = _hand_loss(model, graph, batch.users.numpy(), batch.pos.numpy(), 0.3, 1.5)
    for key, value in want.items():
        assert float(got[key].detach()) == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_targets_carry_no_gradient():
    """Stop-gradient: with the predictor set to the identity, ``1 - cos(e_u, sg(e_i))``
    pulls e_u only; the gradient reaching the item side comes from the symmetric term alone.
    Checked on the user-item term by zeroing the other terms' weights."""
    torch.manual_seed(0)
    graph = make_tiny_graph(1)
    model = BM3(graph, embedding_dim=5, dropout=0.0, reg_weight=0.0, cl_weight=0.0,
                pair_sampling='batch', num_layers=0)
    with torch.no_grad():
        model.predictor.weight.copy_(torch.eye(5))
        model.predictor.bias.zero_()
    batch = tiny_batch(graph, num_users=6)
    model.loss(batch)['loss'].backward()
    # By hand with 0 layers: u = E_u, i = 2 E_i; loss = (1 - mean cos(u_b, sg(i_b)))
    #                                                 + (1 - mean cos(i_b, sg(u_b))).
    eu = model.user_emb.weight.detach().clone().requires_grad_(True)
    ei = model.item_emb.weight.detach().clone().requires_grad_(True)
    ub, ib = eu[batch.users], 2 * ei[batch.pos]
    ref = (1 - torch.nn.functional.cosine_similarity(ub, ib.detach()).mean()) + \
        (1 - torch.nn.functional.cosine_similarity(ib, ub.detach()).mean())
    ref.backward()
    assert torch.allclose(model.user_emb.weight.grad, eu.grad, atol=1e-6)
    assert torch.allclose(model.item_emb.weight.grad, ei.grad, atol=1e-6)
    # Without the stop-gradient the gradients would differ (the targets would be pulled too).
    eu2 = model.user_emb.weight.detach().clone().requires_grad_(True)
    ub2, ib2 = eu2[batch.users], 2 * model.item_emb.weight.detach()[batch.pos]
    (2 - 2 * torch.nn.functional.cosine_similarity(ub2, ib2).mean()).backward()
    assert not torch.allclose(eu2.grad, eu.grad, atol=1e-6)


def test_training_pairs_are_interactions_drawn_uniformly():
    torch.manual_seed(0)
    graph = make_tiny_graph(1)
    batch = tiny_batch(graph, num_users=8)
    model = BM3(graph, batch_size=40_000)
    users, items = model.training_pairs(batch)
    assert users.shape == items.shape == (40_000,)
    train = set(map(tuple, graph.train_edge_index.t().tolist()))
    assert set(zip(users.tolist(), items.tolist())) <= train  # observed pairs only
    # Each interaction is equally likely, so a user comes up in proportion to its degree.
    deg = torch.bincount(graph.train_edge_index[0], minlength=graph.num_users).double()
    freq = torch.bincount(users, minlength=graph.num_users).double() / users.numel()
    assert torch.allclose(freq, deg / deg.sum(), atol=0.01)
    assert len(set(users.tolist())) == graph.num_users  # every user with an item shows up
    # batch_size None: as many pairs as the trainer's batch has users
    assert BM3(graph).training_pairs(batch)[0].numel() == len(batch)
    # 'batch': the trainer's users and positives
    u, i = BM3(graph, pair_sampling='batch').training_pairs(batch)
    assert torch.equal(u, batch.users) and torch.equal(i, batch.pos)
    # the negatives never matter
    torch.manual_seed(3)
    a = model.loss(batch)['loss']
    torch.manual_seed(3)
    other = type(batch)(batch.users, batch.pos, torch.zeros_like(batch.neg))
    assert torch.equal(a, model.loss(other)['loss'])
    with pytest.raises(ValueError, match='pair_sampling'):
        BM3(graph, pair_sampling='users')
    with pytest.raises(ValueError, match='batch_size'):
        BM3(graph, batch_size=0)


def test_features_are_trained_like_the_authors_embeddings():
    torch.manual_seed(0)
    graph = make_tiny_graph(2)
    model = BM3(graph, feature_norm='none')
    params = dict(model.named_parameters())
    assert 'feat_0' in params and 'feat_1' in params
    assert torch.equal(model.feat_0.detach(), graph.features['m0'].float())  # raw start
    assert 'feat_0' in model.state_dict()  # learned, so checkpointed
    opt = torch.optim.Adam(model.model_parameters(), lr=1e-2)
    model.loss(tiny_batch(graph))['loss'].backward()
    assert model.feat_0.grad is not None and model.feat_0.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(model.feat_0.detach(), graph.features['m0'].float())
    fixed = BM3(graph, train_features=False)
    assert 'feat_0' not in dict(fixed.named_parameters())
    assert 'feat_0' not in fixed.state_dict()


def test_tiktok_mini_smoke_loss_decreases():
    """A few epochs of the shared trainer on the bundled sample: finite, decreasing loss
    (a smoke test, not a ranking claim)."""
    graph = RecGraph.from_hetero(load_dataset('tiktok-mini')[0], name='tiktok-mini')
    torch.manual_seed(0)
    model = BM3(graph, batch_size=512)
    config = TrainConfig(epochs=6, batch_size=512, patience=0, eval_every=6, ks=(20,),
                         seed=0, device='cpu', progress=False)
    history = Trainer(model, graph, config).fit(test=False).history
    losses = [h['train/loss'] for h in history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert history[-1]['train/rec'] < history[0]['train/rec']


def test_checkpoints_from_before_trainable_features_still_load():
    """A state dict of the fixed-feature BM3 (no ``feat_<j>`` entries) loads into the current
    model, which then scores exactly as the fixed-feature model did."""
    torch.manual_seed(0)
    graph = make_tiny_graph(2)
    old = BM3(graph, train_features=False).eval()
    new = BM3(graph).eval()
    new.load_state_dict(old.state_dict())
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(old.get_embedding(), new.get_embedding()))
    state = old.state_dict()
    state.pop('predictor.weight')
    with pytest.raises(RuntimeError, match='predictor.weight'):  # other keys stay strict
        new.load_state_dict(state)


def test_bm3_documented_defaults_repr_and_initialisation():
    graph = make_tiny_graph(2, num_users=12, num_items=15, seed=3)
    model = BM3(graph)
    assert (model.embedding_dim, model.num_layers, model.dropout, model.reg_weight,
            model.cl_weight, model.train_features, model.pair_sampling, model.batch_size) == \
        (64, 1, 0.5, 0.1, 2.0, True, 'interactions', None)
    assert repr(model) == ("BM3(12 users, 15 items, modalities=['m0', 'm1'], embedding_dim=64, "
                           "num_layers=1, dropout=0.5, pair_sampling='interactions', "
                           'train_features=True)')
    assert_xavier_uniform(model.user_emb.weight)
    assert_xavier_uniform(model.item_emb.weight)
    for lin in (model.predictor, *model.projections):
        assert lin.bias.abs().sum() == 0 and lin.weight.std() > 0
    assert [lin.weight.shape for lin in model.projections] == [(64, 8), (64, 5)]
    # features l2-normalised by default
    assert torch.allclose(model.feat_0.detach().norm(dim=1), torch.ones(15))
    assert torch.equal(model._train_pairs, graph.train_edge_index)


def test_bm3_state_loading_stays_strict_about_other_keys():
    """Only the missing ``feat_<j>`` of an old checkpoint are forgiven: an unexpected key or a
    wrong shape is still refused, with torch's message."""
    graph = make_tiny_graph(2)
    model = BM3(graph, embedding_dim=4)
    state = model.state_dict()
    state['bogus'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "bogus"'):
        model.load_state_dict(state)
    state = model.state_dict()
    state['feat_0'] = torch.zeros(3, 4)  # a parameter of BM3 itself, not of a submodule
    with pytest.raises(RuntimeError, match='size mismatch for feat_0'):
        model.load_state_dict(state)
    fixed = BM3(graph, embedding_dim=4, train_features=False)  # no feat_<j> to forgive
    fixed.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith('feat_')})
