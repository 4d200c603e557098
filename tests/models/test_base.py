"""Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmssl_pyg.models import get_model_class
from mmssl_pyg.testing import write_json_dataset


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
