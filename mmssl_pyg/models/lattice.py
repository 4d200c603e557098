"""LATTICE: learned item-item graphs from projected multimodal features on top of LightGCN."""
from __future__ import annotations

import os
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import coalesce

from ..data.graph import RecGraph
from ..nn.conv import BipartiteConv
from ..nn.features import FeatureNorm
from ..nn.propagation import light_propagate, sparse_aggregations
from ..nn.topk import blockwise_topk
from ..utils.options import Formerly, NonNegative, NonNegativeInt, PositiveInt, UnitInterval
from ._common import knn_graph, knn_normalize, modality_features, register_features
from .base import Batch, Recommender, bpr_loss, l2_reg


class LATTICE(Recommender):
    r"""LATTICE from Zhang et al., `"Mining Latent Structures for Multimedia Recommendation"
    <https://arxiv.org/abs/2104.09036>`_ (ACM MM 2021).

    **Item-item graphs.** For every modality :math:`m` a frozen graph :math:`\tilde{S}^m` is the
    cosine kNN graph of the raw features (top-:math:`k` similarities kept as weights,
    normalised :math:`D^{-1/2} S D^{-1/2}`), built once and cached. A learned graph
    :math:`\hat{S}^m` is the same construction on projected features
    :math:`\mathbf{W}_m \mathbf{x}^m_i + \mathbf{b}_m`. With softmax modality weights
    :math:`\alpha` and skip weight :math:`\lambda`:

    .. math::
        A = (1 - \lambda)\, \mathrm{norm}\Big(\sum_m \alpha_m \hat{S}^m\Big)
            + \lambda \sum_m \alpha_m \tilde{S}^m

    The neighbours of the learned graph are chosen by a blockwise top-:math:`k` (never a dense
    ``items x items`` matrix); its edge weights are the similarities recomputed for those
    pairs, so gradients reach the projections and :math:`\alpha`. As in the authors' code the
    graph is rebuilt (with gradient) at the first batch of every epoch and used without
    gradient for the rest of the epoch; evaluation rebuilds it from the current weights.

    **Embeddings.** Item ID embeddings are propagated ``num_item_layers`` times over
    :math:`A`, giving :math:`\mathbf{h}_i`; LightGCN runs on the user-item graph; the item
    vector is :math:`\mathbf{e}_i + \mathrm{normalize}(\mathbf{h}_i)`. Trained with BPR plus L2 on
    the batch's final embeddings.

    Departures from the authors' code: the user-item graph is LightGCN's symmetric
    normalisation (theirs is :math:`D^{-1}(A + I)`), and the raw features are fixed buffers
    (theirs are trainable embeddings that only receive gradient through the learned graph).

    Args:
        graph: the training graph; needs at least one modality (any number).
        embedding_dim: ID embedding size (default ``64``).
        feat_embed_dim: size of the projected features (default ``64``).
        num_layers: LightGCN layers on the user-item graph (default ``2``, the length of
            ``weight_size``).
        num_item_layers: propagation layers on the item graph (default ``1``).
        knn_k: neighbours per item in both graphs (default ``10``).
        lambda_coeff: weight :math:`\lambda` of the frozen graph (default ``0.9``).
        reg_weight: L2 weight (default ``1e-5``, the authors' ``regs[0]``).
        feature_norm: feature scaling before the projections (default ``'l2'``; the frozen graph
            is the same for any row scaling).
        cache_dir: directory of the on-disk frozen-graph cache (default
            ``$MMSSL_PYG_GRAPH_CACHE``; memory only when unset).

    Defaults follow the authors' release (``codes/utility/parser.py``) and the MMRec toolkit's
    ``LATTICE.yaml``.
    """
    min_modalities = 1

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 feat_embed_dim: PositiveInt = 64, num_layers: NonNegativeInt = 2,
                 num_item_layers: NonNegativeInt = 1, knn_k: PositiveInt = 10,
                 lambda_coeff: UnitInterval = 0.9, reg_weight: NonNegative = 1e-5,
                 feature_norm: Annotated[FeatureNorm, Formerly('feat_norm')] = 'l2',
                 cache_dir: str | os.PathLike | None = None):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.feat_embed_dim = feat_embed_dim
        self.num_layers = num_layers
        self.num_item_layers = num_item_layers
        self.knn_k = knn_k
        self.lambda_coeff = lambda_coeff
        self.reg_weight = reg_weight
        self.modality_names = register_features(self, graph.features, feature_norm)
        feats = modality_features(self)
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.projections = torch.nn.ModuleList(
            [torch.nn.Linear(f.size(1), feat_embed_dim) for f in feats])
        self.modal_weight = torch.nn.Parameter(torch.empty(len(feats)))
        self.conv = BipartiteConv()
        self.register_adjacency(graph)
        # Frozen graphs, one per modality: (item, neighbour) pairs [M, 2, n_i*k] and their
        # normalised weights [M, n_i*k].
        frozen = []
        for f in feats:
            ei, sim = knn_graph(f, self.knn_k, include_self=True, cache_dir=cache_dir)
            frozen.append((ei, knn_normalize(ei, sim, graph.num_items)))
        self.register_buffer('frozen_index', torch.stack([e for e, _ in frozen]),
                             persistent=False)
        self.register_buffer('frozen_weight', torch.stack([w for _, w in frozen]),
                             persistent=False)
        # Current item graph A: (item, neighbour) pairs [2, E] and weights [E] (no gradient).
        self.register_buffer('graph_index', None, persistent=False)
        self.register_buffer('graph_weight', None, persistent=False)
        self._rebuild = True
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in self.projections:
            lin.reset_parameters()
        torch.nn.init.zeros_(self.modal_weight)  # softmax -> equal modality weights
        self.graph_index = self.graph_weight = None
        self._rebuild = True

    # ------------------------------------------------------------------ item graphs
    def learned_graphs(self) -> list[tuple[Tensor, Tensor]]:
        """Per modality, the kNN graph of the projected features: ``(edge_index [2, n_i*k],
        cosine weight [n_i*k])``; the weights carry gradient, the neighbour choice does not."""
        graphs = []
        for lin, f in zip(self.projections, modality_features(self)):
            z = F.normalize(lin(f), dim=1)
            _, nbr = blockwise_topk(z.detach(), z.detach(), min(self.knn_k, self.num_items))
            row = torch.arange(self.num_items, device=z.device).repeat_interleave(nbr.size(1))
            col = nbr.reshape(-1)
            graphs.append((torch.stack([row, col]), (z[row] * z[col]).sum(-1)))
        return graphs

    def build_item_graph(self) -> tuple[Tensor, Tensor]:
        """Mix the learned and the frozen graphs into :math:`A` (see the class docstring)."""
        alpha = torch.softmax(self.modal_weight, 0)
        learned = self.learned_graphs()
        ei = torch.cat([e for e, _ in learned], 1)
        w = torch.cat([alpha[m] * s for m, (_, s) in enumerate(learned)])
        ei, w = coalesce(ei, w, num_nodes=self.num_items, reduce='sum')
        w = (1.0 - self.lambda_coeff) * knn_normalize(ei, w, self.num_items)
        frozen_ei = self.frozen_index.transpose(0, 1).reshape(2, -1)
        frozen_w = (alpha[:, None] * self.frozen_weight).reshape(-1)
        ei = torch.cat([ei, frozen_ei], 1)
        w = torch.cat([w, self.lambda_coeff * frozen_w])
        return coalesce(ei, w, num_nodes=self.num_items, reduce='sum')

    def _item_graph_for_step(self) -> tuple[Tensor, Tensor]:
        if self.training and torch.is_grad_enabled():
            if self._rebuild or self.graph_index is None:
                ei, w = self.build_item_graph()  # with gradient, for this batch only
                self.graph_index, self.graph_weight = ei, w.detach()
                self._rebuild = False
                return ei, w
            return self.graph_index, self.graph_weight
        with torch.no_grad():  # evaluation: the graph of the current weights
            ei, w = self.build_item_graph()
        self.graph_index, self.graph_weight = ei, w
        return ei, w

    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True

    # ------------------------------------------------------------------ embeddings
    def forward_embeddings(self, item_graph: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        ei, w = item_graph
        h = self.item_emb.weight
        for _ in range(self.num_item_layers):
            # edge_index rows are (item, neighbour): messages flow neighbour -> item.
            h = self.conv(h, ei.flip(0), w, size=(self.num_items, self.num_items))
        u, i = light_propagate(self.user_emb.weight, self.item_emb.weight, self.num_layers,
                               *sparse_aggregations(self.conv, self.adj_ui, self.adj_iu))
        return u, i + F.normalize(h, dim=1)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.forward_embeddings(self._item_graph_for_step())

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        u, i = self.get_embedding()
        ub, pb, nb = u[batch.users], i[batch.pos], i[batch.neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        reg = self.reg_weight * l2_reg(ub, pb, nb)
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict:
        state = {'frozen_index': self.frozen_index.cpu(), 'frozen_weight': self.frozen_weight.cpu(),
                 'rebuild': self._rebuild}
        if self.graph_index is not None:
            state['graph_index'] = self.graph_index.cpu()
            state['graph_weight'] = self.graph_weight.cpu()
        return state

    def set_extra_state(self, state: dict) -> None:
        device = self.item_emb.weight.device
        self.frozen_index = state['frozen_index'].to(device)
        self.frozen_weight = state['frozen_weight'].to(device)
        if 'graph_index' in state:
            self.graph_index = state['graph_index'].to(device)
            self.graph_weight = state['graph_weight'].to(device)
        else:
            self.graph_index = self.graph_weight = None
        self._rebuild = bool(state.get('rebuild', True))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'knn_k={self.knn_k}, lambda_coeff={self.lambda_coeff})')
