"""Most-popular recommender: the floor every learned model has to beat."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.graph import RecGraph
from .base import Batch, Recommender


class Pop(Recommender):
    r"""Recommends the items with the most training interactions to every user.

    .. math::
        \hat{y}_{ui} = |\{u' : (u', i) \in \mathcal{R}_{\text{train}}\}|

    (each user-item pair counted once). Scores are the inner products of a constant user
    vector ``[1]`` and the item column of degrees, so the shared evaluator and ``recommend``
    rank with it as with any other model; each user's training items are excluded there as
    usual. Items of equal degree are ordered arbitrarily (by :func:`torch.topk`).

    Pop has no parameters (:attr:`trainable` is ``False``): the trainer runs one epoch
    without mini-batches, evaluates it on validation and tests it.

    Args:
        graph: the training graph (only its training interactions are read).
    """

    trainable = False

    def __init__(self, graph: RecGraph):
        super().__init__(graph)
        edge_index = graph.train_edge_index.long()
        key = torch.unique(edge_index[0] * graph.num_items + edge_index[1])  # distinct pairs
        degree = torch.bincount(key % graph.num_items, minlength=graph.num_items)
        self.register_buffer('degree', degree.to(torch.float32), persistent=False)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.degree.new_ones(self.num_users, 1), self.degree.view(-1, 1)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        raise RuntimeError('Pop has no parameters and is not trained with mini-batches '
                           '(the trainer skips training for models with trainable = False)')

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items)'
