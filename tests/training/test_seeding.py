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


def _user_table(num_users, dim, values, num_items=30):
    """A LightGCN whose user ID table holds ``values`` (row-major); its item table has fewer
    than 1000 values, so only the user table is checked."""
    model = LightGCN(_graph(num_users=num_users, num_items=num_items), embedding_dim=dim)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.as_tensor(values, dtype=torch.float32).view(-1, dim))
    return model


def _pm(c, n):
    """``n`` values alternating ``+c, -c`` (mean 0, unbiased std ``c * sqrt(n / (n - 1))``)."""
    return torch.tensor([c, -c]).repeat(n // 2)


# a 50 x 20 table: Xavier std sqrt(2 / (50 + 20)), uniform bound sqrt(3) * std
STD = math.sqrt(2 / 70)
BOUND = math.sqrt(3) * STD
MESSAGE = ('LightGCN user ID table does not look {init}-initialised (std {std}, expected 0.169; '
           '{beyond} of the values beyond the uniform bound 0.293), so paired seeds would change '
           'its initialisation. Set the class attribute id_init to the rule the model uses, or '
           'train without paired initialisation.')


@pytest.mark.parametrize('scale', [0.81, 1.0, 1.19])
def test_a_table_within_a_fifth_of_the_xavier_std_is_redrawn(scale):
    model = _user_table(50, 20, _pm(scale * STD, 1000))
    assert pair_id_embeddings(model, 0) == ['user', 'item']
    want = torch.empty(50, 20)  # seed 0's user stream: a generator seeded 1
    torch.nn.init.xavier_uniform_(want, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.user_emb.weight, want)


@pytest.mark.parametrize('scale, std', [(0.79, '0.134'), (1.21, '0.205')])
def test_a_table_off_the_xavier_std_by_more_than_a_fifth_is_refused_in_full(scale, std):
    model = _user_table(50, 20, _pm(scale * STD, 1000))
    # measured: the unbiased std of +-c over 1000 values, c * sqrt(1000 / 999)
    with pytest.raises(ValueError) as err:
        pair_id_embeddings(model, 0)
    assert str(err.value) == MESSAGE.format(init='xavier_uniform', std=std, beyond='0.0%')


def test_values_beyond_the_uniform_bound_tell_normal_from_uniform():
    # values up to the bound plus a relative 1e-5 (float rounding) are not beyond it
    at_bound = torch.cat([_pm(STD, 998), _pm(BOUND * (1 + 1e-5), 2)])
    assert pair_id_embeddings(_user_table(50, 20, at_bound), 0) == ['user', 'item']
    normal = _user_table(50, 20, at_bound)
    normal.id_init = 'xavier_normal'
    with pytest.raises(ValueError) as err:
        pair_id_embeddings(normal, 0)
    # std: sqrt((998 STD^2 + 2 * 3 STD^2) / 999) = 1.0025 STD
    assert str(err.value) == MESSAGE.format(init='xavier_normal', std='0.169', beyond='0.0%')
    # 10 of 1000 values 1% beyond the bound: std sqrt((990 * 0.95^2 + 10 * 3 * 1.01^2) / 999)
    # = 0.962 STD, Xavier-normal-like
    tails = torch.cat([_pm(0.95 * STD, 990), _pm(1.01 * BOUND, 10)])
    normal = _user_table(50, 20, tails)
    normal.id_init = 'xavier_normal'
    assert pair_id_embeddings(normal, 0) == ['user', 'item']
    with pytest.raises(ValueError) as err:
        pair_id_embeddings(_user_table(50, 20, tails), 0)
    assert str(err.value) == MESSAGE.format(init='xavier_uniform', std='0.163', beyond='1.0%')


def test_tables_of_fewer_than_1000_values_are_not_checked():
    assert pair_id_embeddings(_user_table(37, 27, _pm(1.0, 999 + 1)[:999]), 0) == ['user', 'item']
    with pytest.raises(ValueError, match='does not look xavier_uniform-initialised'):
        pair_id_embeddings(_user_table(40, 25, _pm(1.0, 1000)), 0)


def test_each_table_is_drawn_from_its_own_stream_of_the_seed():
    # the stream seeds are part of every recorded paired result: seed s draws the user table
    # with a generator seeded s * 1_000_003 + 1, the item table with s * 1_000_003 + 2 (modulo
    # 2**63, so that any integer is a valid generator seed)
    graph = _graph()
    for seed in (5, 2**63 // 1_000_003 + 1):  # the second one's stream seeds pass 2**63
        model = LightGCN(graph, embedding_dim=8)
        assert pair_id_embeddings(model, seed) == ['user', 'item']
        for offset, role, rows in ((1, 'user', graph.num_users), (2, 'item', graph.num_items)):
            want = torch.empty(rows, 8)
            g = torch.Generator().manual_seed((seed * 1_000_003 + offset) % 2**63)
            torch.nn.init.xavier_uniform_(want, generator=g)
            assert torch.equal(id_embedding_tables(model)[role], want)


def test_a_double_model_keeps_its_dtype_and_gets_the_float32_draw():
    graph = _graph()
    single, double = LightGCN(graph, embedding_dim=8), LightGCN(graph, embedding_dim=8).double()
    pair_id_embeddings(single, 3)
    pair_id_embeddings(double, 3)
    assert double.user_emb.weight.dtype == torch.float64
    assert torch.equal(double.user_emb.weight, single.user_emb.weight.double())


def test_id_tables_are_found_by_either_name_pair_and_only_as_a_pair():
    class Tables(torch.nn.Module):
        def __init__(self, *names):
            super().__init__()
            for name in names:
                setattr(self, name, torch.nn.Embedding(4, 3))

    both = Tables('user_id', 'item_id')
    assert id_embedding_tables(both) == {'user': both.user_id.weight, 'item': both.item_id.weight}
    first = Tables('user_emb', 'item_emb', 'user_id', 'item_id')
    assert id_embedding_tables(first)['user'] is first.user_emb.weight
    assert id_embedding_tables(Tables('user_emb')) == {}
    assert id_embedding_tables(Tables('user_emb', 'item_id')) == {}
    half = Tables('user_emb', 'item_id')
    half.id_init = 'bogus'  # nothing to redraw, so the rule is not looked at
    assert pair_id_embeddings(half, 0) == []
    # a module without id_init is drawn with Xavier uniform
    plain = Tables('user_emb', 'item_emb')
    assert pair_id_embeddings(plain, 1) == ['user', 'item']
    want = torch.empty(4, 3)
    torch.nn.init.xavier_uniform_(want, generator=torch.Generator().manual_seed(1_000_004))
    assert torch.equal(plain.user_emb.weight, want)


def test_an_unknown_id_init_is_refused_with_the_known_rules():
    model = LightGCN(_graph(), embedding_dim=8)
    model.id_init = 'kaiming'
    with pytest.raises(ValueError) as err:
        pair_id_embeddings(model, 0)
    assert str(err.value) == ("LightGCN.id_init is 'kaiming'; paired seeds know "
                              "['xavier_normal', 'xavier_uniform']")
