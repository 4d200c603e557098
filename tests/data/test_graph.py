"""Tests of ``mmssl_pyg/data/graph.py`` that the model and evaluator tests do not make
(those exercise the adjacencies and row layouts on real graphs)."""
from __future__ import annotations

import torch

from mmssl_pyg.data import RecGraph


def _graph(features: dict) -> RecGraph:
    # 3 users, 4 items; 5 training pairs, 2 validation, 1 test
    return RecGraph(3, 4, torch.tensor([[0, 0, 1, 2, 2], [0, 1, 2, 3, 0]]),
                    torch.tensor([[0, 1], [2, 3]]), torch.tensor([[2], [1]]), features,
                    name='toy')


def test_repr_gives_the_counts_and_each_modality_shape():
    graph = _graph({'image': torch.zeros(4, 5), 'text': torch.zeros(4, 2)})
    assert repr(graph) == ('RecGraph(toy: users=3, items=4, train=5, val=2, test=1, '
                           'modalities=[image=(4, 5), text=(4, 2)])')
    assert repr(_graph({})) == ('RecGraph(toy: users=3, items=4, train=5, val=2, test=1, '
                                'modalities=[none])')
