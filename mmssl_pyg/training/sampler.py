"""Vectorised BPR mini-batch sampling: distinct users, one positive and one negative each."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.graph import RecGraph, csr_rowptr
from ..models.base import Batch


class BPRSampler:
    """Draws :class:`~mmssl_pyg.models.base.Batch` es as the MMSSL paper does.

    Each mini-batch holds ``batch_size`` *distinct* users drawn uniformly among the users with
    training items (all of them when there are fewer), one positive drawn uniformly from the
    user's training items and one negative drawn uniformly from the items the user has not
    interacted with in training. Negatives come from vectorised rejection sampling: candidates
    are drawn for the whole batch at once, looked up in the sorted ``user * n_items + item``
    keys of the training pairs with :func:`torch.searchsorted`, and only the hits are redrawn;
    there is no Python loop over users.

    An epoch is ``ceil(|train| / batch_size)`` mini-batches (``batches_per_epoch`` overrides).
    All randomness comes from the sampler's own CPU :class:`torch.Generator`, whose state
    :meth:`state_dict` returns for checkpoints. Batches are built on the CPU (so a seed gives
    the same batches on every device) and moved by the trainer.

    Args:
        graph: the training graph.
        batch_size: users per mini-batch.
        seed: seed of the sampler's generator.
        batches_per_epoch: override of the number of mini-batches per epoch.
    """

    def __init__(self, graph: RecGraph, batch_size: int = 1024, seed: int = 0,
                 batches_per_epoch: int | None = None):
        edge_index = graph.train_edge_index.detach().cpu().long()
        if edge_index.numel() == 0:
            raise ValueError(f'dataset {graph.name!r} has no training interactions to sample')
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.batch_size = int(batch_size)
        keys = torch.unique(edge_index[0] * self.num_items + edge_index[1])  # sorted, no dups
        self.keys = keys
        users = keys // self.num_items
        self.items = keys % self.num_items
        self.rowptr = csr_rowptr(users, self.num_users)
        counts = self.rowptr.diff()
        # Users who interacted with every item have no negative: they are never drawn.
        self.users = torch.nonzero((counts > 0) & (counts < self.num_items)).view(-1)
        if self.users.numel() == 0:
            raise ValueError(f'dataset {graph.name!r}: no user has both a training item and an '
                             f'unobserved item, so no BPR triple can be drawn')
        self.num_batches = int(batches_per_epoch) if batches_per_epoch else \
            math.ceil(int(keys.numel()) / self.batch_size)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        for _ in range(self.num_batches):
            yield self.sample()

    def sample(self) -> Batch:
        """One mini-batch (on the CPU)."""
        g = self.generator
        n = min(self.batch_size, self.users.numel())
        users = self.users[torch.randperm(self.users.numel(), generator=g)[:n]]
        start, deg = self.rowptr[users], self.rowptr[users + 1] - self.rowptr[users]
        offset = (torch.rand(n, generator=g, dtype=torch.float64) * deg).long()
        pos = self.items[start + torch.minimum(offset, deg - 1)]
        neg = self.sample_negatives(users)
        return Batch(users, pos, neg)

    def sample_negatives(self, users: Tensor) -> Tensor:
        """One uniformly drawn unobserved item per entry of ``users`` (rejection sampling)."""
        g = self.generator
        neg = torch.randint(self.num_items, (users.numel(),), generator=g)
        todo = torch.arange(users.numel())
        while True:
            found = self._observed(users[todo], neg[todo])
            todo = todo[found]
            if todo.numel() == 0:
                return neg
            neg[todo] = torch.randint(self.num_items, (todo.numel(),), generator=g)

    def _observed(self, users: Tensor, items: Tensor) -> Tensor:
        query = users * self.num_items + items
        pos = torch.searchsorted(self.keys, query).clamp(max=self.keys.numel() - 1)
        return self.keys[pos] == query

    def state_dict(self) -> dict:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state['generator'])
