"""FREEDOM: a frozen kNN item graph and a degree-sensitively pruned user-item graph."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor

from ..data.graph import RecGraph, bipartite_adjacency
from ..nn.conv import BipartiteConv
from ..nn.features import FeatureNorm
from ..nn.propagation import light_propagate, sparse_aggregations
from ..utils.options import Formerly, NonNegative, NonNegativeInt, PositiveInt, Ratio
from ._common import (
    degree_sensitive_prune,
    item_adjacency,
    knn_graph,
    knn_normalize,
    modality_features,
    register_features,
    xavier_normal_linear,
)
from .base import Batch, Recommender, bpr_loss


class FREEDOM(Recommender):
    r"""FREEDOM from Zhou and Shen, `"A Tale of Two Graphs: Freezing and Denoising Graph
    Structures for Multimodal Recommendation" <https://arxiv.org/abs/2211.06924>`_
    (ACM MM 2023).

    **Frozen item-item graph.** For every modality the unweighted cosine kNN graph of the raw
    features is normalised :math:`D^{-1/2} S^m D^{-1/2}`; the graphs are mixed with fixed
    modality weights, :math:`S = \sum_m w_m S^m`, once, before training (built blockwise,
    cached by feature hash, and kept in the checkpoint). Item ID embeddings are propagated
    ``num_item_layers`` times over :math:`S`, giving :math:`\mathbf{h}_i`.

    **Denoised user-item graph.** At the start of every epoch (:meth:`on_epoch_start`) the
    training graph is pruned: ``int(E * (1 - dropout))`` edges are kept, sampled without
    replacement with probability :math:`\propto 1/\sqrt{|N_u||N_i|}` (degree-sensitive edge
    pruning), and re-normalised symmetrically. LightGCN runs on the pruned graph in training
    and on the full graph at evaluation. Item vectors are :math:`\mathbf{e}_i + \mathbf{h}_i`.

    **Loss.** BPR on the final embeddings plus ``reg_weight`` times, per modality, BPR between
    the users and the projected features :math:`\mathbf{W}_m\mathbf{x}^m_i + \mathbf{b}_m` of the
    positive and negative items.

    The raw features are fixed buffers here (the authors' code makes them trainable
    embeddings).

    Args:
        graph: the training graph; needs at least one modality (any number).
        embedding_dim: ID embedding size, also the projected feature size (default ``64``).
        num_layers: LightGCN layers on the user-item graph (default ``2``, ``n_ui_layers``).
        num_item_layers: layers on the item graph (default ``1``, ``n_mm_layers``).
        knn_k: neighbours per item (default ``10``).
        dropout: fraction of user-item edges pruned each epoch (default ``0.8``).
        reg_weight: weight of the modality BPR terms (default ``1e-4``, a value of MMRec's
            grid; not tuned here).
        modality_weights: mixing weights :math:`w_m` of the modality graphs, a list in modality
            order or a ``{modality: weight}`` dict (names the dataset lacks are ignored);
            rescaled to sum to 1 (default: equal; the authors use ``{image: 0.1, text: 0.9}``).
        feature_norm: feature scaling before the projections (default ``'l2'``).
        cache_dir: directory of the on-disk frozen-graph cache (default
            ``$MMSSL_PYG_GRAPH_CACHE``; memory only when unset).

    Defaults are the MMRec toolkit's ``FREEDOM.yaml`` (``dropout`` the first value of its grid,
    ``reg_weight`` one value of its grid).
    """
    min_modalities = 1

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 num_layers: NonNegativeInt = 2, num_item_layers: NonNegativeInt = 1,
                 knn_k: PositiveInt = 10, dropout: Ratio = 0.8, reg_weight: NonNegative = 1e-4,
                 modality_weights: Sequence[float] | dict[str, float] | None = None,
                 feature_norm: Annotated[FeatureNorm, Formerly('feat_norm')] = 'l2',
                 cache_dir: str | os.PathLike | None = None):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.num_item_layers = num_item_layers
        self.knn_k = knn_k
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.modality_names = register_features(self, graph.features, feature_norm)
        feats = modality_features(self)
        self.modality_weights = self._modality_weights(modality_weights)
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.projections = torch.nn.ModuleList(
            [xavier_normal_linear(f.size(1), embedding_dim) for f in feats])
        self.conv = BipartiteConv()
        self.register_adjacency(graph)
        self.register_buffer('train_edge_index', graph.train_edge_index, persistent=False)
        index, weight = self.frozen_graph(feats, cache_dir)
        self.register_buffer('item_index', index, persistent=False)
        self.register_buffer('item_weight', weight, persistent=False)
        self._set_item_adjacency()
        # The pruned graph of the current epoch (kept edges and their adjacency).
        self.register_buffer('pruned_edge_index', None, persistent=False)
        self.register_buffer('pruned_ui', None, persistent=False)
        self.register_buffer('pruned_iu', None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.projections:
            torch.nn.init.xavier_normal_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        self.pruned_edge_index = self.pruned_ui = self.pruned_iu = None

    # ------------------------------------------------------------------ graphs
    def _modality_weights(self, weights) -> list[float]:
        names = self.modality_names
        if weights is None:
            return [1.0 / len(names)] * len(names)
        if isinstance(weights, dict):
            missing = [m for m in names if m not in weights]
            if missing:
                raise ValueError(f'FREEDOM modality_weights {dict(weights)} has no weight for '
                                 f'modalities {missing} of the dataset; give one per modality '
                                 f'in {names}')
            weights = [weights[m] for m in names]
        elif len(weights) != len(names):
            raise ValueError(f'FREEDOM modality_weights has {len(weights)} values but the '
                             f'dataset has modalities {names}; give one per modality')
        total = float(sum(weights))
        if total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f'FREEDOM modality_weights must be non-negative with a positive '
                             f'sum, got {weights}')
        return [float(w) / total for w in weights]

    def frozen_graph(self, feats: list[Tensor], cache_dir=None) -> tuple[Tensor, Tensor]:
        """``(edge_index [2, E] as (item, neighbour), weight [E])`` of :math:`S`."""
        index, weight = [], []
        for w_m, f in zip(self.modality_weights, feats):
            ei, sim = knn_graph(f, self.knn_k, include_self=True, cache_dir=cache_dir)
            index.append(ei)
            weight.append(w_m * knn_normalize(ei, torch.ones_like(sim), self.num_items))
        return torch.cat(index, 1), torch.cat(weight)

    def _set_item_adjacency(self) -> None:
        adj, adj_rev = item_adjacency(self.item_index, self.item_weight, self.num_items)
        self.register_buffer('item_adj', adj, persistent=False)
        self.register_buffer('item_adj_rev', adj_rev, persistent=False)

    def prune(self) -> None:
        """Draw this epoch's degree-sensitively pruned user-item graph (global torch RNG)."""
        if self.dropout == 0.0:
            self.pruned_edge_index, self.pruned_ui, self.pruned_iu = \
                self.train_edge_index, self.adj_ui, self.adj_iu
            return
        kept = degree_sensitive_prune(self.train_edge_index, self.num_users, self.num_items,
                                      self.dropout)
        self.pruned_edge_index = kept
        self.pruned_ui, self.pruned_iu = bipartite_adjacency(kept, self.num_users,
                                                             self.num_items, norm='sym')

    def on_epoch_start(self, epoch: int) -> None:
        self.prune()

    # ------------------------------------------------------------------ embeddings
    def forward_embeddings(self, adj_ui: Tensor, adj_iu: Tensor) -> tuple[Tensor, Tensor]:
        h = self.item_emb.weight
        for _ in range(self.num_item_layers):
            h = self.conv(h, self.item_adj, adj_rev=self.item_adj_rev)
        u, i = light_propagate(self.user_emb.weight, self.item_emb.weight, self.num_layers,
                               *sparse_aggregations(self.conv, adj_ui, adj_iu))
        return u, i + h

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.forward_embeddings(self.adj_ui, self.adj_iu)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        if self.pruned_ui is None:  # called outside the trainer's epoch loop
            self.prune()
        u, i = self.forward_embeddings(self.pruned_ui, self.pruned_iu)
        ub = u[batch.users]
        bpr = bpr_loss((ub * i[batch.pos]).sum(-1), (ub * i[batch.neg]).sum(-1))
        modal = ub.new_zeros(())
        for lin, f in zip(self.projections, modality_features(self)):
            pos, neg = lin(f[batch.pos]), lin(f[batch.neg])
            modal = modal + bpr_loss((ub * pos).sum(-1), (ub * neg).sum(-1))
        modal = self.reg_weight * modal
        return {'loss': bpr + modal, 'bpr': bpr, 'modal_bpr': modal}

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict:
        return {'item_index': self.item_index.cpu(), 'item_weight': self.item_weight.cpu()}

    def set_extra_state(self, state: dict) -> None:
        device = self.item_emb.weight.device
        self.item_index = state['item_index'].to(device)
        self.item_weight = state['item_weight'].to(device)
        self._set_item_adjacency()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'knn_k={self.knn_k}, dropout={self.dropout})')
