"""Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models import get_model_class
from mmssl_pyg.models.base import Batch, Recommender, bpr_loss, graph_signature, l2_reg
from mmssl_pyg.models.mf import MF
from mmssl_pyg.testing import _dense_sym, make_tiny_graph, write_json_dataset
from mmssl_pyg.utils.options import Formerly, PositiveInt


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


@pytest.fixture(scope='module')
def model_and_graph(tiny):
    from mmssl_pyg.training.run import load_graph
    graph = load_graph(str(tiny))
    return get_model_class('lightgcn')(graph, embedding_dim=8), graph


@pytest.mark.parametrize('users', [[-1], [0, -5], [10**6]])
def test_model_recommend_refuses_user_ids_out_of_range(users, model_and_graph):
    model, _ = model_and_graph
    with pytest.raises(ValueError, match='out of range'):
        model.recommend(torch.tensor(users), k=5)


@pytest.mark.parametrize('k', [0, 10**6])
def test_model_recommend_refuses_k_out_of_range(k, model_and_graph):
    model, _ = model_and_graph
    with pytest.raises(ValueError, match='number of items'):
        model.recommend(torch.tensor([0]), k=k)


# --------------------------------------------------------------------------- the shared pieces
def test_bpr_loss_and_l2_reg_by_hand():
    pos, neg = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 3.0])
    by_hand = sum(math.log1p(math.exp(n - p)) for p, n in [(1.0, 0.0), (-0.5, 0.5), (2.0, 3.0)])
    assert bpr_loss(pos, neg).item() == pytest.approx(by_hand / 3)
    a, b = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    assert l2_reg(a, b).item() == pytest.approx((25 + 1 + 4 + 8) / (2 * 2))
    assert l2_reg(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(25 / 2)  # batch of one
    assert l2_reg(torch.zeros(0, 2)).item() == 0.0  # an empty batch: no division by zero


def test_graph_signature_by_hand():
    edges = [(0, 2), (1, 0), (3, 1)]
    graph = RecGraph(4, 3, torch.tensor(edges).t(), torch.zeros(2, 0, dtype=torch.long),
                     torch.zeros(2, 0, dtype=torch.long), name='sig')
    check = sum(u * 1_000_003 + i for u, i in edges)
    assert graph_signature(graph) == (4, 3, 3, check)
    empty = RecGraph(4, 3, torch.zeros(2, 0, dtype=torch.long),
                     torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long))
    assert graph_signature(empty) == (4, 3, 0, 0)
    assert MF(graph, embedding_dim=2).graph_signature == (4, 3, 3, check)


def test_batch_to_keeps_the_triples_and_final_and_drops_the_cache():
    batch = Batch(torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([3, 0]),
                  cache={'x': 1}, final=torch.tensor([True, False]))
    moved = batch.to('cpu')
    assert len(batch) == len(moved) == 2 and moved.cache == {}
    assert moved.users.tolist() == [0, 2] and moved.pos.tolist() == [1, 1]
    assert moved.neg.tolist() == [3, 0] and moved.final.tolist() == [True, False]
    assert Batch(torch.tensor([4]), torch.tensor([0]), torch.tensor([1])).to('cpu').final is None


def test_too_few_modalities_names_the_model_dataset_and_fix():
    graph = make_tiny_graph(1)
    with pytest.raises(ValueError) as err:
        get_model_class('bm3')(make_tiny_graph(0))
    assert str(err.value) == (
        "BM3 needs at least 1 item modalities; dataset 'tiny' has none. Load a dataset with "
        '<modality>_feat.npy files or pick an ID-only model (mf, lightgcn, sgl).')

    class TwoModalities(MF):
        min_modalities = 2
    with pytest.raises(ValueError, match=r"^TwoModalities needs at least 2 item modalities; "
                       r"dataset 'tiny' has \['m0'\]\."):
        TwoModalities(graph)


def test_base_defaults_adjacency_buffers_and_parameter_split():
    graph = make_tiny_graph(0, num_users=12, num_items=9, seed=3)

    class Bare(Recommender):  # no __init__ of its own: nothing to check
        pass

    bare = Bare(graph)
    assert (bare.num_users, bare.num_items) == (12, 9)
    with pytest.raises(NotImplementedError, match='^Bare has no critic$'):
        bare.critic_loss(None)
    for call in (lambda: bare.loss(None), bare.get_embedding):
        with pytest.raises(NotImplementedError):
            call()
    assert bare.critic_parameters() == []
    bare.register_adjacency(graph)  # default: the symmetric normalisation
    assert torch.allclose(bare.adj_ui.to_dense(), _dense_sym(graph.train_edge_index, 12, 9))
    assert torch.allclose(bare.adj_iu.to_dense(), _dense_sym(graph.train_edge_index, 12, 9).t())
    assert bare.state_dict() == {}  # left out of checkpoints

    class WithCritic(MF):
        def __init__(self, graph):
            super().__init__(graph, embedding_dim=2)
            self.critic = torch.nn.Linear(2, 1)

        def critic_parameters(self):
            return list(self.critic.parameters())

    model = WithCritic(graph)
    ids = {id(p) for p in model.model_parameters()}
    assert ids == {id(model.user_emb.weight), id(model.item_emb.weight)}


def test_options_are_checked_and_converted_at_construction():
    graph = make_tiny_graph(0)
    with pytest.raises(ValueError, match='embedding_dim'):
        MF(graph, embedding_dim=0)
    model = get_model_class('lightgcn')(graph, 3, num_layers=1)  # positional options too
    assert (model.embedding_dim, model.num_layers) == (3, 1)


def test_recommend_by_hand_scores_exclusions_blocks_and_defaults():
    """MF with set tables: scores are inner products, each user's excluded items never come
    back, ``block_size`` does not change the result and ``k`` defaults to 20."""
    graph = make_tiny_graph(0, num_users=5, num_items=24, seed=1)
    model = MF(graph, embedding_dim=2)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.randn(5, 2, generator=gen))
        model.item_emb.weight.copy_(torch.randn(24, 2, generator=gen))
    rowptr, col = graph.train_rows()
    eu, ei = model.user_emb.weight.tolist(), model.item_emb.weight.tolist()
    users = [3, 0, 4]
    top, scores = model.recommend(users, k=4, exclude_rowptr=rowptr, exclude_col=col,
                                  block_size=2, return_scores=True)
    for r, u in enumerate(users):
        seen = set(col[rowptr[u]:rowptr[u + 1]].tolist())
        by_hand = sorted(((sum(a * b for a, b in zip(eu[u], ei[i])), i)
                          for i in range(24) if i not in seen), reverse=True)[:4]
        assert top[r].tolist() == [i for _, i in by_hand]
        assert scores[r].tolist() == pytest.approx([s for s, _ in by_hand], rel=1e-5)
    same = model.recommend(torch.tensor(users), k=4, exclude_rowptr=rowptr, exclude_col=col)
    assert torch.equal(same, top)
    assert model.recommend(torch.tensor([1])).shape == (1, 20)
    unfiltered = model.recommend(torch.tensor([1]), k=24)  # no exclusion: every item
    assert sorted(unfiltered[0].tolist()) == list(range(24))


def test_recommend_errors_in_full(model_and_graph):
    model, _ = model_and_graph
    with pytest.raises(ValueError) as err:
        model.recommend(torch.tensor([-1] * 12 + [0, 40]), k=5)
    assert str(err.value) == (f'user ids {[-1] * 10} are out of range: the model has users '
                              f'0..39. Fix: pass ids in that range')
    for k in (True, 2.0, '3'):
        with pytest.raises(ValueError) as err:
            model.recommend(torch.tensor([0]), k=k)
        assert str(err.value) == (f'k must be an integer in 1..60 (the number of items), '
                                  f'got {k!r}')
    assert model.recommend(torch.tensor([39]), k=60).shape == (1, 60)  # both bounds hold
    assert model.recommend(torch.tensor([0]), k=1).shape == (1, 1)


def test_a_subclass_constructor_is_checked_renamed_and_bound():
    """Every subclass with its own constructor gets the check of its declared options (the
    class is defined here, after mutmut's patching, so the wrapping runs under it)."""
    class Sized(Recommender):
        def __init__(self, graph, width: Annotated[PositiveInt, Formerly('size')] = 2,
                     depth: PositiveInt = 1):
            super().__init__(graph)
            self.width, self.depth = width, depth

    graph = make_tiny_graph(0)
    with pytest.raises(ValueError, match='width'):
        Sized(graph, width=0)
    with pytest.raises(ValueError, match='depth'):
        Sized(graph, 3, 0)  # positional values are checked too
    assert (Sized(graph, size=4).width, Sized(graph, 5, 6).depth) == (4, 6)
    assert Sized.__init__.__wrapped__.__name__ == '__init__'
