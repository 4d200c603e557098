r"""MMSSL's generated modality graphs :math:`\hat{\mathcal{G}}^m` (Eq. 3, step 4; read by
Eq. 8): each user's top-:math:`k` generated items per modality, collected over an epoch and
swapped in at its end."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..nn.adjacency import BipartiteAdjacency
from ..nn.generator import ModalityRelationGenerator


class ModalityGraphs(torch.nn.Module):
    r"""Store of the generated neighbours and the modality graphs built from them.

    Until a user's first swap its edges are the training graph's; every swapped-in user
    keeps its latest :math:`k` neighbours (``-1`` pads a user with fewer candidates).
    :attr:`adjs` holds one :class:`~mmssl_pyg.nn.adjacency.BipartiteAdjacency` per modality
    (all ``initial`` before the first swap).

    Args:
        train_edge_index: ``[2, E]`` deduplicated training edges sorted by (user, item).
        num_users, num_items, num_modalities, k: sizes.
        norm, layout: of the modality graphs' adjacencies.
        initial: the training graph's adjacency with that ``norm``.
    """

    def __init__(self, train_edge_index: Tensor, num_users: int, num_items: int,
                 num_modalities: int, k: int, norm: str, layout: str,
                 initial: BipartiteAdjacency):
        super().__init__()
        self.num_users, self.num_items, self.num_modalities = num_users, num_items, num_modalities
        self.k, self.norm, self.layout = k, norm, layout
        self.register_buffer('train_edge_index', train_edge_index, persistent=False)
        self.initial = initial
        self.adjs = torch.nn.ModuleList([initial] * num_modalities)
        self.has_generated: Tensor | None = None          # [n_u] bool
        self.neighbours: list[Tensor] | None = None       # per modality [n_u, k] int32, -1 pad
        self.pending: list[tuple[Tensor, list[Tensor]]] = []  # (users, [B, k] per modality)

    def collect(self, users: Tensor, neighbours: list[Tensor]) -> None:
        """Queue ``users``' top-k neighbours (``[B, k]`` per modality) for the next swap."""
        self.pending.append((users.detach().clone(), [t.int() for t in neighbours]))

    @torch.no_grad()
    def collect_topk(self, generator: ModalityRelationGenerator, users: Tensor,
                     user_modal: list[Tensor], item_modal: list[Tensor], row: Tensor,
                     col: Tensor, final: Tensor | None, item_block_size: int) -> None:
        """Queue the top-k neighbours (Eq. 3, step 4) of the batch ``users`` (modality
        embeddings ``user_modal`` ``[B, d]``, training entries ``(row, col)``) for the next
        swap. With ``final`` (see :class:`~mmssl_pyg.models.base.Batch`) only the users no
        later batch of the epoch redraws are searched: the others' rows would be replaced at
        the swap, so the swapped-in graphs are the same."""
        if final is not None and not bool(final.all()):
            local = final.nonzero().view(-1)
            keep = torch.isin(row, local)
            remap = torch.full((users.numel(),), -1, dtype=torch.long, device=users.device)
            remap[local] = torch.arange(local.numel(), device=users.device)
            users, row, col = users[local], remap[row[keep]], col[keep]
            user_modal = [u[local] for u in user_modal]
        if users.numel() == 0:
            return
        self.collect(users, [generator.topk(u.detach(), i.detach(), self.k, row, col,
                                            item_block_size)
                             for u, i in zip(user_modal, item_modal)])

    def merged_pending(self) -> tuple[Tensor, list[Tensor], Tensor]:
        """Pending (users, neighbours, step) with one row per user, the latest batch winning
        (``step``: the position of that batch among the pending ones)."""
        users = torch.cat([u for u, _ in self.pending])
        idx = [torch.cat([n[m] for _, n in self.pending]) for m in range(self.num_modalities)]
        step = torch.cat([torch.full_like(u, j) for j, (u, _) in enumerate(self.pending)])
        pos = torch.arange(users.numel(), device=users.device)
        last = torch.full((self.num_users,), -1, dtype=torch.long, device=users.device)
        last.scatter_reduce_(0, users, pos, reduce='amax')
        keep = last[users] == pos
        return users[keep], [t[keep] for t in idx], step[keep]

    def gather(self, all_gather: Callable[[Tensor], list[Tensor]]) -> None:
        """Data-parallel training: replace this process's pending (users, top-k neighbours)
        by every process's, so every replica swaps in the same modality graphs. A user drawn
        several times keeps the neighbours of its latest step, and within one step those of
        the highest rank: the batches of a step are, in rank order, consecutive draws of the
        shared sampler, so the graph is the one a single process training on them in that
        order would build."""
        dev = self.train_edge_index.device
        if self.pending:
            users, idx, step = self.merged_pending()
        else:
            users = step = torch.empty(0, dtype=torch.long, device=dev)
            idx = [torch.empty(0, self.k, dtype=torch.int32, device=dev)
                   for _ in range(self.num_modalities)]
        users, step = torch.cat(all_gather(users)), torch.cat(all_gather(step))
        idx = [torch.cat(all_gather(t)) for t in idx]
        # rank order within a step (stable sort), so the latest entry of a user wins
        order = torch.sort(step, stable=True).indices
        self.pending = [(users[order], [t[order] for t in idx])] if users.numel() else []

    @torch.no_grad()
    def update(self) -> int:
        """Swap in the neighbours collected since the last swap; returns the number of users
        whose neighbours changed."""
        if not self.pending:
            return 0
        device = self.train_edge_index.device
        if self.neighbours is None:
            self.has_generated = torch.zeros(self.num_users, dtype=torch.bool, device=device)
            self.neighbours = [torch.full((self.num_users, self.k), -1, dtype=torch.int32,
                                          device=device) for _ in range(self.num_modalities)]
        users, idx, _ = self.merged_pending()
        self.has_generated[users] = True
        for m in range(self.num_modalities):
            self.neighbours[m][users] = idx[m].to(device)
        self.pending = []
        self.rebuild()
        return int(users.numel())

    def edge_index(self, modality: int) -> Tensor:
        """Current (user, item) edges of :math:`\\hat{\\mathcal{G}}^m`: the generated ones,
        then the training edges of the users never swapped in."""
        train = self.train_edge_index
        if self.has_generated is None:
            return train
        users = self.has_generated.nonzero().view(-1)
        items = self.neighbours[modality][users].long()
        row = users.repeat_interleave(items.size(1))
        items = items.reshape(-1)
        keep = items >= 0
        return torch.cat([torch.stack([row[keep], items[keep]]),
                          train[:, ~self.has_generated[train[0]]]], 1)

    def rebuild(self) -> None:
        """Rebuild :attr:`adjs` from the stored neighbours."""
        if self.has_generated is None:
            self.adjs = torch.nn.ModuleList([self.initial] * self.num_modalities)
            return
        self.adjs = torch.nn.ModuleList(
            [BipartiteAdjacency(self.edge_index(m), self.num_users, self.num_items, self.norm,
                                self.layout) for m in range(self.num_modalities)])

    def state(self) -> dict:
        """Copies of the stored and pending neighbours (for checkpoints)."""
        pending = None
        if self.pending:
            users, idx, _ = self.merged_pending()
            pending = {'users': users, 'neighbours': idx}
        has = None if self.has_generated is None else self.has_generated.clone()
        nbs = None if self.neighbours is None else [n.clone() for n in self.neighbours]
        return {'version': 1, 'k': self.k, 'has_generated': has, 'neighbours': nbs,
                'pending': pending}

    def load_state(self, state: dict) -> None:
        if state.get('k') != self.k:
            raise ValueError(f"checkpoint's modality graphs have k={state.get('k')} neighbours "
                             f'per user but this model has k={self.k}; use the same topk_rate '
                             f'and item count as the checkpoint')
        device = self.train_edge_index.device  # copies: the state may be reused elsewhere
        has = state.get('has_generated')
        self.has_generated = None if has is None else has.to(device, copy=True)
        nbs = state.get('neighbours')
        self.neighbours = None if nbs is None else [n.to(device, copy=True) for n in nbs]
        pending = state.get('pending')
        self.pending = [] if pending is None else [
            (pending['users'].to(device), [n.to(device) for n in pending['neighbours']])]
        self.rebuild()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # keep the (non-buffer) neighbour state on the module's device
        if self.has_generated is not None:
            self.has_generated = fn(self.has_generated)
            self.neighbours = [fn(n) for n in self.neighbours]
        self.pending = [(fn(u), [fn(n) for n in idx]) for u, idx in self.pending]
        return self

