"""MMSSL model: every equation against a dense reference on a tiny graph, the generated modality
graphs, the critic / model step protocol, ablations, layouts and checkpoints."""
import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models import MODELS
from mmssl_pyg.models.base import Batch
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.conv import is_sparse_tensor_available

NU, NI = 12, 20


def _graph(num_modalities=2, seed=0, num_users=NU, num_items=NI, edges=60):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, num_users, (edges,), generator=g),
                      torch.randint(0, num_items, (edges,), generator=g)])
    # every user has at least one training item
    ei = torch.cat([ei, torch.stack([torch.arange(num_users),
                                     torch.arange(num_users) % num_items])], 1)
    ei = torch.unique(ei, dim=1)
    feats = {f'm{m}': torch.rand(num_items, 3 + m, generator=g) * (m + 1) * 5
             for m in range(num_modalities)}
    return RecGraph(num_users, num_items, ei, ei[:, :3], ei[:, :3], feats, 'tiny')


def _model(graph=None, **kw):
    torch.manual_seed(0)
    kw.setdefault('embedding_dim', 8)
    kw.setdefault('num_heads', 2)
    kw.setdefault('topk_rate', 0.15)
    return MMSSL(graph if graph is not None else _graph(), **kw)


def _batch(graph, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    users = torch.randperm(graph.num_users, generator=g)[:n]
    pos = torch.empty(n, dtype=torch.long)
    for k, u in enumerate(users.tolist()):
        items = graph.train_edge_index[1][graph.train_edge_index[0] == u]
        pos[k] = items[0]
    return Batch(users, pos, torch.randint(0, graph.num_items, (n,), generator=g))


def _dense_adj(edge_index, nu=NU, ni=NI):
    a = torch.zeros(nu, ni)
    a[edge_index[0], edge_index[1]] = 1.0
    return a


def _sym(a):
    du, di = a.sum(1).clamp(min=1), a.sum(0).clamp(min=1)
    return a / du.sqrt()[:, None] / di.sqrt()[None, :]


def _train_step(model, batch, opt_c, opt_m):
    if model.has_critic:
        c = model.critic_loss(batch)
        opt_c.zero_grad()
        c['loss'].backward()
        opt_c.step()
    out = model.loss(batch)
    opt_m.zero_grad()
    out['loss'].backward()
    opt_m.step()
    return out


def _optimisers(model):
    opt_c = torch.optim.Adam(model.critic_parameters(), lr=3e-4, betas=(0.5, 0.9)) \
        if model.has_critic else None
    return opt_c, torch.optim.AdamW(model.model_parameters(), lr=1e-2, weight_decay=0.0)


def _run_epoch(model, graph, opts, batches=3, seed=0):
    model.train()
    model.on_epoch_start(0)
    for b in range(batches):
        _train_step(model, _batch(graph, seed=seed * 100 + b), *opts)
    model.on_epoch_end(0)


# --------------------------------------------------------------------------- Eqs. 1-2
@pytest.mark.parametrize('norm', ['sym', 'row'])
def test_eq2_collaborative_modality_embeddings(norm):
    graph = _graph()
    model = _model(graph, norm=norm).eval()
    emb = model.encode()
    a = _dense_adj(model.train_edge_index)
    for m, name in enumerate(graph.modalities):
        x = graph.features[name]
        x = (x - x.mean(0)) / x.std(0, unbiased=False)          # feature_norm='standard'
        lin = model.generator.lins[m]
        f = x @ lin.weight.t() + lin.bias                        # F^m (eval: no dropout)
        if norm == 'sym':
            u = _sym(a) @ f
            i = _sym(a).t() @ u
        else:  # one-sided: 1/sqrt(|N_u|) for users, 1/sqrt(|N_i|) for items
            u = (a / a.sum(1, keepdim=True).clamp(min=1).sqrt()) @ f
            i = (a.t() / a.sum(0)[:, None].clamp(min=1).sqrt()) @ u
        assert torch.allclose(emb.features[m], f, atol=1e-5)
        assert torch.allclose(emb.user_modal[m], u, atol=1e-5)
        assert torch.allclose(emb.item_modal[m], i, atol=1e-5)


@pytest.mark.parametrize('feature_norm', ['l2', 'none'])
def test_feature_scaling_options(feature_norm):
    graph = _graph()
    model = _model(graph, feature_norm=feature_norm)
    x = graph.features['m0']
    expected = F.normalize(x, dim=1) if feature_norm == 'l2' else x
    assert torch.allclose(model.feat_0, expected)
    with pytest.raises(ValueError, match='feature_norm'):
        _model(graph, feature_norm='minmax')


# --------------------------------------------------------------------------- Eq. 3
def test_eq3_fake_rows_and_topk_for_a_batch():
    graph = _graph()
    model = _model(graph)
    batch = _batch(graph)
    out = model._batch_forward(batch)
    emb = out['emb']
    a_b = _dense_adj(model.train_edge_index)[batch.users]
    for m in range(2):
        s = emb.user_modal[m][batch.users] @ emb.item_modal[m].t()
        s = s * (1 - a_b)
        ref = s / s.norm(dim=1, keepdim=True)
        assert torch.allclose(out['fake'][m].to_dense(), ref, atol=1e-5)
        # the batch's top-k neighbours: k strongest non-training items
        cand = s.detach().masked_fill(a_b.bool(), float('-inf'))
        ref_idx = cand.topk(model.k, dim=1).indices.sort(1).values
        got = model.graphs.pending[-1][1][m].long().sort(1).values
        assert torch.equal(got, ref_idx)
    assert model.k == max(1, math.floor(0.15 * NI))


# --------------------------------------------------------------------------- Eq. 5
def _real_reference(model, users, noise, formula='paper'):
    a = _dense_adj(model.train_edge_index)[users]
    emb = model.encode()
    logits = (a + model.gumbel_scale * noise) / model.gumbel_temperature if formula == 'paper' \
        else a + model.gumbel_scale / model.gumbel_temperature * noise
    soft = torch.softmax(logits, dim=1)
    s_hat = (emb.user[users] @ emb.item.t()) * (1 - a)
    s_hat = s_hat / s_hat.norm(dim=1, keepdim=True)
    total = soft + model.aux_weight * s_hat
    return total / total.norm(dim=1, keepdim=True), emb


@pytest.mark.parametrize('path', ['sparse', 'dense', 'release'])
def test_eq5_gumbel_real_rows(path):
    kw = {'gumbel_formula': 'release', 'gumbel_temperature': 0.5} if path == 'release' else {}
    model = _model(**kw).eval()
    users = torch.tensor([0, 3, 5, 7])
    noise = -torch.log(-torch.log(torch.rand(4, NI) + 1e-8) + 1e-8)
    ref, emb = _real_reference(model, users, noise, 'release' if path == 'release' else 'paper')
    rows = model.real_rows(users, emb.user[users], emb.item, noise=noise,
                           dense=None if path == 'release' else path == 'dense')
    assert torch.allclose(rows.to_dense(), ref, atol=1e-5)
    if path == 'sparse':  # the default settings take the path without n_items-wide rows
        assert model._softmax_is_sparse() and rows.dense is None


def test_eq5_without_gumbel_transformation():
    model = _model(ablation='wo_gt')
    users = torch.tensor([1, 2])
    emb = model.encode()
    a = _dense_adj(model.train_edge_index)[users]
    rows = model.real_rows(users, emb.user[users], emb.item)
    assert torch.allclose(rows.to_dense(), a / a.norm(dim=1, keepdim=True), atol=1e-6)


# --------------------------------------------------------------------------- Eqs. 8-10, 12
def test_eqs_8_to_12_after_a_graph_swap():
    graph = _graph()
    model = _model(graph)
    _run_epoch(model, graph, _optimisers(model))
    model.eval()
    emb = model.encode()
    eu, ei = model.user_emb.weight, model.item_emb.weight
    views_u, views_i = [], []
    for m in range(2):  # Eq. 8 on the generated graph
        g = _sym(_dense_adj(model.modality_edge_index(m)))
        views_u.append(g @ ei)
        views_i.append(g.t() @ eu)
        assert torch.allclose(emb.user_views[m], views_u[m], atol=1e-5)
        assert torch.allclose(emb.item_views[m], views_i[m], atol=1e-5)
    tokens = torch.cat([torch.stack(views_u, 1), torch.stack(views_i, 1)])
    h = model.attention(tokens).mean(1)                       # Eq. 9 (tested on its own)
    assert torch.allclose(torch.cat([emb.user_fused, emb.item_fused]), h, atol=1e-5)
    # Eq. 10: E0 = E + mu normalize(h); LightGCN on the symmetric training graph; layer mean
    a = _sym(_dense_adj(model.train_edge_index))
    big = torch.zeros(NU + NI, NU + NI)
    big[:NU, NU:], big[NU:, :NU] = a, a.t()
    x = torch.cat([eu, ei]) + 0.36 * F.normalize(h, dim=1)
    layers = [x]
    for _ in range(model.num_layers):
        layers.append(big @ layers[-1])
    e_bar = torch.stack(layers).mean(0)
    assert torch.allclose(torch.cat([emb.user_graph, emb.item_graph]), e_bar, atol=1e-5)
    # Eq. 12: e* = E_bar + omega * sum_m normalize(u^m)
    user = e_bar[:NU] + 0.55 * sum(F.normalize(u, dim=1) for u in emb.user_modal)
    item = e_bar[NU:] + 0.55 * sum(F.normalize(i, dim=1) for i in emb.item_modal)
    assert torch.allclose(emb.user, user, atol=1e-5)
    assert torch.allclose(emb.item, item, atol=1e-5)


# --------------------------------------------------------------------------- Eqs. 11, 13-14
def test_eqs_13_14_loss_terms():
    graph = _graph()
    model = _model(graph, adv_weight=0.1, cl_weight=0.2)
    batch = _batch(graph)
    torch.manual_seed(5)
    out = model.loss(batch)
    assert set(out) == {'loss', 'bpr', 'reg', 'generator', 'contrastive'}
    torch.manual_seed(5)  # the same dropout masks: recompute the forward pass
    emb = model.encode()
    u, p, n = emb.user[batch.users], emb.item[batch.pos], emb.item[batch.neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = 1e-5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * len(batch))
    for um, im in zip(emb.user_modal, emb.item_modal):
        reg = reg + 1e-5 * (um[batch.users].pow(2).sum() + im[batch.pos].pow(2).sum()
                            + im[batch.neg].pow(2).sum()) / (2 * len(batch))
    cl = 0.0
    for h in emb.user_views:  # Eq. 11, mean over the batch users
        hb = F.normalize(h[batch.users], dim=1)
        e = F.normalize(u, dim=1)
        sim = torch.exp(hb @ e.t() / 0.5)
        cl = cl - torch.log(sim.diag() / sim.sum(1)).mean()
    assert torch.allclose(out['bpr'], bpr, atol=1e-5)
    assert torch.allclose(out['reg'], reg, rtol=1e-4)
    assert torch.allclose(out['contrastive'], cl, atol=1e-5)
    total = bpr + reg + 0.1 * out['generator'] + 0.2 * cl
    assert torch.allclose(out['loss'], total, atol=1e-5)
    grads = torch.autograd.grad(out['contrastive'], [model.user_emb.weight,
                                                     model.item_emb.weight])
    assert all(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------- protocol
def test_critic_step_caches_forward_and_detaches_fake_rows(monkeypatch):
    graph = _graph()
    model = _model(graph)
    assert model.has_critic and len(model.critic_parameters()) == 10
    critic_ids = {id(p) for p in model.critic_parameters()}
    assert not critic_ids & {id(p) for p in model.model_parameters()}
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, 'encode', lambda: calls.append(1) or encode())
    batch = _batch(graph)
    c = model.critic_loss(batch)
    assert set(c) == {'loss', 'critic', 'gradient_penalty'}
    c['loss'].backward()
    assert all(p.grad is None for p in model.model_parameters())  # fake rows were detached
    assert all(p.grad is not None for p in model.critic_parameters())
    for p in model.critic_parameters():
        p.grad = None
    out = model.loss(batch)
    assert len(calls) == 1  # the forward pass was reused
    out['generator'].backward()
    assert all(p.grad is None for p in model.critic_parameters())  # critic frozen for L_G
    assert model.generator.lins[0].weight.grad.abs().sum() > 0
    assert all(p.requires_grad for p in model.critic_parameters())
    assert len(model.graphs.pending) == 1  # one top-k collection per batch


@pytest.mark.parametrize('num_modalities', [1, 2, 3])
def test_training_runs_with_any_number_of_modalities(num_modalities):
    graph = _graph(num_modalities)
    model = _model(graph)
    opts = _optimisers(model)
    for epoch in range(2):
        _run_epoch(model, graph, opts, seed=epoch)
    out = model.loss(_batch(graph))
    assert all(torch.isfinite(v) for v in out.values())
    model.eval()
    with torch.no_grad():
        u, i = model.get_embedding()
    assert u.shape == (NU, 8) and i.shape == (NI, 8)
    assert model.recommend(torch.tensor([0, 1]), k=5).shape == (2, 5)


def test_needs_a_modality():
    graph = _graph(1)
    graph.features = {}
    with pytest.raises(ValueError, match='modalities'):
        MMSSL(graph)


@pytest.mark.parametrize('ablation', [None, 'wo_asl', 'wo_cl', 'wo_gt', 'rp_gae'])
def test_ablations(ablation):
    graph = _graph()
    model = _model(graph, ablation=ablation)
    assert model.has_critic == (ablation not in ('wo_asl', 'rp_gae'))
    assert (model.critic is None) == (not model.has_critic)
    batch = _batch(graph)
    if not model.has_critic:
        assert model.critic_parameters() == []
        with pytest.raises(RuntimeError, match='no critic'):
            model.critic_loss(batch)
    opts = _optimisers(model)
    _run_epoch(model, graph, opts)
    torch.manual_seed(3)
    out = model.loss(batch)
    assert torch.isfinite(out['loss'])
    out = {k: v.detach() for k, v in out.items()}
    if ablation == 'wo_asl':
        assert float(out['generator']) == 0.0 and model.adv_weight == 0.0
    if ablation == 'wo_cl':
        assert float(out['contrastive']) == 0.0 and model.cl_weight == 0.0
    else:
        assert float(out['contrastive']) > 0
    if ablation == 'rp_gae':
        torch.manual_seed(3)
        emb = model.encode()
        a = _dense_adj(model.train_edge_index)[batch.users]
        pw = (a.numel() - a.sum()) / a.sum()
        ref = torch.stack([F.binary_cross_entropy_with_logits(
            um[batch.users] @ im.t(), a, pos_weight=pw)
            for um, im in zip(emb.user_modal, emb.item_modal)]).mean()
        assert torch.allclose(out['generator'], ref, atol=1e-5)
    assert str(ablation) in repr(model)
    with pytest.raises(ValueError, match='ablation'):
        _model(graph, ablation='wo_everything')


# --------------------------------------------------------------------------- graphs
def test_generated_graphs_change_and_are_used_at_evaluation():
    graph = _graph()
    model = _model(graph)
    opts = _optimisers(model)
    train = model.train_edge_index
    assert torch.equal(model.modality_edge_index(0), train)  # before the first swap
    model.eval()
    with torch.no_grad():
        before = model.get_embedding()[0].clone()
    model.train()
    model.on_epoch_start(0)
    batch = _batch(graph, n=5)
    _train_step(model, batch, *opts)
    assert torch.equal(model.modality_edge_index(0), train)  # not swapped mid-epoch
    model.eval()
    with torch.no_grad():
        mid = model.get_embedding()[0].clone()
    model.train()
    model.on_epoch_end(0)
    graphs1 = [model.modality_edge_index(m) for m in range(2)]
    seen = set(batch.users.tolist())
    for g in graphs1:
        assert g.size(1) > 0
        for u in range(NU):  # seen users: k generated, non-training neighbours
            items = set(g[1][g[0] == u].tolist())
            train_items = set(train[1][train[0] == u].tolist())
            if u in seen:
                assert len(items) == model.k and not items & train_items
            else:
                assert items == train_items
    model.eval()
    with torch.no_grad():
        after = model.get_embedding()[0]
    # parameters changed between `before` and `mid`; only the graph between `mid` and `after`
    assert not torch.allclose(mid, after, atol=1e-6)
    assert not torch.equal(before, after)
    # another epoch with other users: those keep, the new ones change
    model.train()
    batch2 = Batch(torch.tensor([0, 1, 2, 3]),
                   torch.tensor([int(train[1][train[0] == u][0]) for u in range(4)]),
                   torch.tensor([0, 1, 2, 3]))
    _train_step(model, batch2, *opts)
    _train_step(model, _batch(graph, n=6, seed=7), *opts)
    model.on_epoch_end(1)
    graphs2 = [model.modality_edge_index(m) for m in range(2)]
    assert any(g1.shape != g2.shape or not torch.equal(g1, g2)
               for g1, g2 in zip(graphs1, graphs2))


def test_checkpoint_restores_generated_graphs():
    graph = _graph()
    model = _model(graph)
    _run_epoch(model, graph, _optimisers(model))
    _train_step(model, _batch(graph, seed=9), *_optimisers(model))  # pending, mid-epoch
    state = model.state_dict()
    clone = _model(graph)
    clone.load_state_dict(state)
    for m in range(2):
        assert torch.equal(clone.modality_edge_index(m), model.modality_edge_index(m))
    model.eval()
    clone.eval()
    with torch.no_grad():
        assert torch.allclose(clone.get_embedding()[0], model.get_embedding()[0])
    saved = state['_extra_state']['neighbours'][0].clone()
    model.on_epoch_end(1)
    clone.on_epoch_end(1)
    for m in range(2):
        assert torch.equal(clone.modality_edge_index(m), model.modality_edge_index(m))
    assert torch.equal(state['_extra_state']['neighbours'][0], saved)  # a snapshot, not a view
    with pytest.raises(ValueError, match='k='):
        _model(graph, topk_rate=0.5).load_state_dict(state)


# --------------------------------------------------------------------------- layers
LAYOUTS = ['csr', 'coo', 'edge_index', pytest.param('sparse_tensor', marks=pytest.mark.skipif(
    not is_sparse_tensor_available(), reason='torch-sparse not installed'))]


@pytest.mark.parametrize('norm', ['sym', 'row'])
@pytest.mark.parametrize('layout', LAYOUTS)
def test_adjacency_layouts_give_the_same_model(layout, norm):
    graph = _graph()
    ref = _model(graph, norm=norm)
    model = _model(graph, norm=norm, adj_layout=layout)
    for m in (ref, model):
        torch.manual_seed(1)
        _run_epoch(m, graph, _optimisers(m))
        m.eval()
    with torch.no_grad():
        for a, b in zip(ref.get_embedding(), model.get_embedding()):
            assert torch.allclose(a, b, atol=1e-5)
    model.train()
    ref.train()
    batch = _batch(graph)
    torch.manual_seed(4)
    loss = model.loss(batch)['loss']
    torch.manual_seed(4)
    loss_ref = ref.loss(batch)['loss']
    assert torch.allclose(loss, loss_ref, atol=1e-5)
    g = torch.autograd.grad(loss, model.user_emb.weight)[0]
    g_ref = torch.autograd.grad(loss_ref, ref.user_emb.weight)[0]
    assert torch.allclose(g, g_ref, atol=1e-5)


# --------------------------------------------------------------------------- misc
def test_repr_registry_reset_and_determinism():
    graph = _graph()
    model = _model(graph)
    assert repr(model) == ("MMSSL(12 users, 20 items, modalities=['m0', 'm1'], embedding_dim=8, "
                           'num_layers=2, num_heads=2, k=3, ablation=None)')
    assert MODELS['mmssl'] is MMSSL

    def run():
        m = _model(graph)
        opts = _optimisers(m)
        torch.manual_seed(11)
        return [float(_train_step(m, _batch(graph, seed=s), *opts)['loss']) for s in range(3)]

    assert run() == run()
    before = model.user_emb.weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.user_emb.weight)


def test_bad_arguments():
    graph = _graph()
    for kw, match in [({'norm': 'mean'}, 'norm'), ({'adj_layout': 'dense'}, 'adj_layout'),
                      ({'gumbel_formula': 'x'}, 'gumbel_formula')]:
        with pytest.raises(ValueError, match=match):
            _model(graph, **kw)


def test_critic_refused_before_allocation():
    n_items = 2_000_000
    ei = torch.tensor([[0, 1, 2], [0, 5, 1_999_999]])
    graph = RecGraph(3, n_items, ei, ei, ei, {'img': torch.zeros(n_items, 1)}, 'huge')
    with pytest.raises(ValueError, match=r'n_items=2,000,000.*parameters.*max_critic_memory'):
        MMSSL(graph, embedding_dim=4, max_critic_memory=1 << 30)
    # the ablation without a critic builds fine
    assert not MMSSL(graph, embedding_dim=4, ablation='wo_asl', topk_rate=1e-6).has_critic


def test_preset_keys_and_spec_values():
    import mmssl_pyg
    preset = yaml.safe_load((Path(mmssl_pyg.__file__).parent / 'configs' / 'mmssl-paper.yaml')
                            .read_text())
    params = inspect.signature(MMSSL.__init__).parameters
    # blocks only where a value differs (no Sports value in the spec: no amazon-sports block)
    assert set(preset['model']) == {'tiktok', 'tiktok-mini', 'amazon-baby', 'allrecipes'}
    assert set(preset['train']) == {'default', 'tiktok-mini'}
    for block in preset['model'].values():
        assert all(key in params for key in block)
    # the preset holds only what differs from the class defaults (spec values live there):
    # no model default block
    merged = dict(preset['model']['tiktok'])
    assert merged['adv_weight'] == 1.8e-3 and merged['gumbel_temperature'] == 0.002
    assert merged['topk_rate'] == 0.01 and params['gp_weight'].default == 0.3
    assert preset['model']['amazon-baby']['adv_weight'] == 1e-4
    assert preset['model']['allrecipes']['adv_weight'] == 3e-4
    assert preset['train']['default']['lr'] == 5.5e-4
    graph = _graph()
    model = MMSSL(graph, **{**merged, 'embedding_dim': 8})
    assert model.k == 1 and model.adv_weight == 1.8e-3


@pytest.mark.parametrize('num_modalities', [1, 3])
def test_attention_weights_accessor_matches_eq9(num_modalities):
    model = _model(_graph(num_modalities)).eval()
    users_w, items_w = model.attention_weights()
    assert users_w.shape == (NU, 2, num_modalities, num_modalities)
    assert items_w.shape == (NI, 2, num_modalities, num_modalities)
    assert torch.allclose(users_w.sum(-1), torch.ones(NU, 2, num_modalities), atol=1e-6)
    # the weights are the ones the forward pass used: recompute them from the views by hand
    emb = model.encode()
    h = torch.stack(emb.user_views, 1)  # [NU, M, d]
    att = model.attention
    dh = att.channels // att.heads
    q = att.query(h).view(NU, num_modalities, att.heads, dh)
    k = att.key(h).view(NU, num_modalities, att.heads, dh)
    ref = (torch.einsum('nahc,nbhc->nhab', q, k) / dh ** 0.5).softmax(-1)
    assert torch.allclose(users_w, ref, atol=1e-6)


def test_default_and_paper_presets_are_two_names_for_one_class():
    """`--model mmssl` runs this library's measured default (configs/mmssl.yaml), `--model
    mmssl-paper` the paper's values (configs/mmssl-paper.yaml); both are MMSSL."""
    from mmssl_pyg.models import MODELS
    from mmssl_pyg.training.presets import resolve_options
    assert MODELS['mmssl'] is MMSSL and MODELS['mmssl-paper'] is MMSSL
    paper = resolve_options(MMSSL, 'tiktok', model_name='mmssl-paper')
    default = resolve_options(MMSSL, 'tiktok', model_name='mmssl')
    assert paper.model_kwargs == {'adv_weight': 1.8e-3, 'gumbel_temperature': 0.002,
                                  'topk_rate': 0.01}
    assert paper.train.lr == 5.5e-4
    kw = default.model_kwargs
    assert kw['fusion_scale'] == kw['mix_scale'] == 'relative'
    assert kw['fusion_weight'] == kw['modality_mix'] == 0.1
    assert kw['num_layers'] == 3 and kw['gumbel_temperature'] == 0.002
    assert default.train.lr == 1.252e-3
    ml = resolve_options(MMSSL, 'movielens-100k', model_name='mmssl')  # chosen per dataset
    assert ml.model_kwargs['num_layers'] == 1 and ml.train.patience == 20
    assert ml.model_kwargs['fusion_scale'] == 'relative'
    # both build; the paper's preset keeps the class's unit content terms
    graph = _graph()
    assert MMSSL(graph, **{**paper.model_kwargs, 'embedding_dim': 8}).fusion_scale == 'unit'
    assert MMSSL(graph, **{**kw, 'embedding_dim': 8}).fusion_scale == 'relative'
