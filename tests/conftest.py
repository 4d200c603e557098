"""Shared tiny graphs for the tests (pytest fixtures and a factory), and one test-session
hook for ``make mutate``: when mutmut runs the tests of a mutant (``MUTANT_UNDER_TEST``
names it), run them fastest first, by the durations mutmut recorded, so that ``-x`` stops a
killed mutant early. The normal suite is not affected."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch


def make_tiny_graph(num_modalities: int = 2, num_users: int = 20, num_items: int = 30,
                    seed: int = 0, dims=(8, 5, 6)) -> RecGraph:
    """A random ``num_users x num_items`` training graph (every user has an item, ~100
    edges) with ``num_modalities`` Gaussian item features of widths ``dims`` and no
    held-out pairs."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.cat([torch.arange(num_users), torch.randint(0, num_users, (80,), generator=gen)])
    items = torch.randint(0, num_items, (users.numel(),), generator=gen)
    edge_index = torch.unique(torch.stack([users, items]), dim=1)
    feats = {f'm{j}': torch.randn(num_items, dims[j], generator=gen)
             for j in range(num_modalities)}
    empty = torch.zeros(2, 0, dtype=torch.long)
    return RecGraph(num_users, num_items, edge_index, empty, empty, feats, 'tiny')


def tiny_batch(graph: RecGraph, num_users: int = 8, seed: int = 0) -> Batch:
    """Distinct users, one of each user's training items, one uniform random negative."""
    gen = torch.Generator().manual_seed(seed)
    rowptr, col = graph.train_rows()
    active = torch.nonzero(rowptr[1:] > rowptr[:-1]).flatten()
    users = active[torch.randperm(active.numel(), generator=gen)[:num_users]]
    pos = col[rowptr[users]]
    neg = torch.randint(0, graph.num_items, (users.numel(),), generator=gen)
    return Batch(users, pos, neg)


@pytest.fixture
def tiny_graph() -> RecGraph:
    """Two modalities, 20 users, 30 items."""
    return make_tiny_graph()


def pytest_collection_modifyitems(session, config, items):
    mutant = os.environ.get('MUTANT_UNDER_TEST', '')
    stats = Path('mutmut-stats.json')  # mutmut runs the tests from its mutants/ folder
    if '__mutmut_' not in mutant or not stats.is_file():
        return
    durations = json.loads(stats.read_text()).get('duration_by_test', {})
    items.sort(key=lambda item: durations.get(item.nodeid, float('inf')))
