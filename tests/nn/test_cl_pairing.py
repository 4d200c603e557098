"""Which views the contrastive loss of Eq. 11 pairs (``cl_pairing``, issue 15): the paper's
``'overall'``, ``'items'`` (also items against their overall embedding) and ``'views'``
(modality view against modality view). Expected values are computed by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.losses import contrastive_pairs, cross_modal_info_nce
from mmssl_pyg.utils.options import declared_options

E = math.e


def _nll(pos, *others):
    """-log(e^pos / (e^pos + sum e^others)), by hand."""
    return -math.log(E ** pos / (E ** pos + sum(E ** o for o in others)))


def test_info_nce_leaves_a_repeated_node_out_of_its_own_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # unit rows (1,0), (0,1), (1,0)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([5, 7, 5])  # rows 0 and 2 are one item
    # row 0: positive cos 1; row 1 (cos 0) is a negative, row 2 is the same item: left out
    # row 1: positive 1; negatives: row 0 (0) and row 2 (0.8)
    # row 2: positive 0.6; row 0 left out, row 1 (0) a negative
    want = (_nll(1, 0) + _nll(1, 0, 0.8) + _nll(0.6, 0)) / 3
    got = cross_modal_info_nce(a, t, temperature=1.0, ids=ids)
    assert got.item() == pytest.approx(want, abs=1e-6)
    # without ids every other row is a negative (the paper's users are distinct)
    plain = (_nll(1, 0, 0.6) + _nll(1, 0, 0.8) + _nll(0.6, 1, 0)) / 3
    assert cross_modal_info_nce(a, t, 1.0).item() == pytest.approx(plain, abs=1e-6)
    # distinct ids give the plain loss
    assert torch.allclose(cross_modal_info_nce(a, t, 1.0, ids=torch.tensor([0, 1, 2])),
                          cross_modal_info_nce(a, t, 1.0))
    # intra-view negatives cos(a_u, a_u') skip the anchor itself and the repeated item too:
    # row 0 adds a_1 (0); row 1 adds a_0 (0) and a_2 (0); row 2 adds a_1 (0)
    intra = (_nll(1, 0, 0) + _nll(1, 0, 0.8, 0, 0) + _nll(0.6, 0, 0)) / 3
    got = cross_modal_info_nce(a, t, 1.0, intra_view_negatives=True, ids=ids)
    assert got.item() == pytest.approx(intra, abs=1e-6)


def test_contrastive_pairs_by_pairing():
    g = torch.Generator().manual_seed(0)
    uv = [torch.randn(5, 3, generator=g) for _ in range(2)]
    iv = [torch.randn(4, 3, generator=g) for _ in range(2)]
    user, item = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g)
    users, items = torch.tensor([4, 0, 2]), torch.tensor([1, 3, 1])

    paper = contrastive_pairs('overall', uv, user[users], iv, item[items], users, items)
    assert len(paper) == 2
    for (a, t, ids), h in zip(paper, uv):
        assert torch.equal(a, h[users]) and torch.equal(t, user[users]) and ids is None

    both = contrastive_pairs('items', uv, user[users], iv, item[items], users, items)
    assert len(both) == 4
    for (a, t, ids), (a0, t0, _) in zip(both[:2], paper):
        assert torch.equal(a, a0) and torch.equal(t, t0) and ids is None
    for (a, t, ids), h in zip(both[2:], iv):
        assert torch.equal(a, h[items]) and torch.equal(t, item[items])
        assert torch.equal(ids, items)

    views = contrastive_pairs('views', uv, user[users], iv, item[items], users, items)
    assert len(views) == 2  # (m0, m1) and (m1, m0)
    assert torch.equal(views[0][0], uv[0][users]) and torch.equal(views[0][1], uv[1][users])
    assert torch.equal(views[1][0], uv[1][users]) and torch.equal(views[1][1], uv[0][users])
    assert views[0][2] is None and views[1][2] is None
    three = contrastive_pairs('views', uv + [user], user[users], iv, item[items], users, items)
    assert len(three) == 6  # every ordered pair of 3 modalities

    # the paper's pairing is the default, listed first, and the neutral value of unit keys
    option = declared_options(MMSSL)['cl_pairing']
    assert option.rule.choices == ('overall', 'items', 'views')
    assert option.default == option.neutral == 'overall'


def _graph(num_modalities=2):
    g = torch.Generator().manual_seed(0)
    users = torch.arange(10).repeat_interleave(3)
    items = torch.randint(0, 12, (users.numel(),), generator=g)
    ei = torch.unique(torch.stack([users, items]), dim=1)
    feats = {f'm{m}': torch.rand(12, 4 + m, generator=g) for m in range(num_modalities)}
    return RecGraph(10, 12, ei, ei[:, :4], ei[:, :4], feats, 'toy')


def _loss_and_views(pairing):
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.3, cl_weight=0.5,
                  cl_pairing=pairing).eval()  # eval: no dropout, the same forward twice
    tr = graph.train_edge_index
    users = torch.tensor([0, 3, 5, 7])
    pos = torch.stack([tr[1][tr[0] == u][0] for u in users.tolist()])
    pos[3] = pos[0]  # one item twice in the batch
    batch = Batch(users, pos, torch.tensor([1, 2, 3, 4]))
    torch.manual_seed(1)
    out = model.loss(batch)
    return out, model.encode(), batch


def _eq11(anchor, target, same=None, tau=0.5):
    """Eq. 11 by hand: mean over rows of -log softmax of cosines; ``same`` masks repeats."""
    sim = torch.exp(F.normalize(anchor, dim=1) @ F.normalize(target, dim=1).t() / tau)
    if same is not None:
        sim = sim * ~(same & ~torch.eye(len(same), dtype=torch.bool))
    return -torch.log(sim.diag() / sim.sum(1)).mean()


def test_mmssl_contrastive_loss_under_each_pairing():
    out, emb, b = _loss_and_views('overall')
    paper = sum(_eq11(h[b.users], emb.user[b.users]) for h in emb.user_views)
    assert torch.allclose(out['contrastive'], paper, atol=1e-5)

    out_i, emb_i, _ = _loss_and_views('items')
    same = b.pos.view(-1, 1) == b.pos.view(1, -1)
    assert same[0, 3]
    items = sum(_eq11(h[b.pos], emb_i.item[b.pos], same) for h in emb_i.item_views)
    assert torch.allclose(out_i['contrastive'], paper + items, atol=1e-5)
    # the pairing changes only the contrastive term
    assert torch.allclose(out_i['bpr'], out['bpr']) and torch.allclose(out_i['reg'], out['reg'])

    out_v, emb_v, _ = _loss_and_views('views')
    h0, h1 = (h[b.users] for h in emb_v.user_views)
    views = _eq11(h0, h1) + _eq11(h1, h0)
    assert torch.allclose(out_v['contrastive'], views, atol=1e-5)
    # 'views' never reaches the overall user embedding's fusion terms through Eq. 11, but it
    # trains the ID embeddings that Eq. 8 aggregates
    model = MMSSL(_graph(), embedding_dim=8, num_heads=2, topk_rate=0.3, cl_pairing='views')
    out = model.loss(b)
    grads = torch.autograd.grad(out['contrastive'], [model.user_emb.weight,
                                                     model.item_emb.weight], allow_unused=True)
    assert grads[0] is None or grads[0].abs().sum() == 0  # H_u aggregates item IDs only
    assert grads[1].abs().sum() > 0


def test_views_pairing_needs_two_modalities_and_names_the_fix():
    with pytest.raises(ValueError, match=r"needs two or more modalities; this graph has "
                                         r"\['m0'\]\. Use cl_pairing='overall'"):
        MMSSL(_graph(1), embedding_dim=8, num_heads=2, cl_pairing='views')
    with pytest.raises(ValueError, match=r"^MMSSL: option 'cl_pairing' expects one of overall, "
                                         r"items, views, got 'both'$"):
        MMSSL(_graph(), embedding_dim=8, num_heads=2, cl_pairing='both')
    MMSSL(_graph(1), embedding_dim=8, num_heads=2, cl_pairing='items')  # fine with one


def test_cl_pairing_in_the_options_table():
    from mmssl_pyg.training.options import ConfigError
    from mmssl_pyg.training.presets import resolve_options
    with pytest.raises(ConfigError, match='cl_pairing'):
        resolve_options(MMSSL, 'tiktok', overrides=['cl_pairing=both'])
    opts = resolve_options(MMSSL, 'tiktok', overrides=['cl_pairing=views'])
    assert opts.model_kwargs['cl_pairing'] == 'views'
    assert resolve_options(MMSSL, 'tiktok').model_kwargs.get('cl_pairing', 'overall') == \
        'overall'
