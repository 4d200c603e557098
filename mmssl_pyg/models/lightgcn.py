"""LightGCN on the bipartite user-item graph."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.graph import RecGraph
from ..nn.conv import BipartiteConv
from ..nn.propagation import light_propagate, sparse_aggregations
from ..utils.options import NonNegative, NonNegativeInt, PositiveInt
from .base import Batch, Recommender, bpr_loss, l2_reg


class LightGCN(Recommender):
    r"""LightGCN from He et al., `"LightGCN: Simplifying and Powering Graph Convolution
    Network for Recommendation" <https://arxiv.org/abs/2002.02126>`_ (SIGIR 2020).

    .. math::
        \mathbf{E}^{(l+1)} = \hat{\mathbf{A}} \mathbf{E}^{(l)}, \qquad
        \bar{\mathbf{E}} = \frac{1}{L+1} \sum_{l=0}^{L} \mathbf{E}^{(l)}

    on the symmetric-normalised user-item graph; scores are inner products.

    Args:
        graph: the training graph.
        embedding_dim: embedding size (default ``64``, as in the paper).
        num_layers: propagation layers :math:`L` (default ``3``, the best of 1-4 in the
            paper's Table 2 and the value every ``mmssl-pyg`` run and benchmark used).
        reg_weight: L2 weight on the batch's layer-0 embeddings (default ``1e-4``).
    """

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 num_layers: NonNegativeInt = 3, reg_weight: NonNegative = 1e-4):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.conv = BipartiteConv()
        self.register_adjacency(graph)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)

    def propagate(self, user_x: Tensor, item_x: Tensor) -> tuple[Tensor, Tensor]:
        """Layer-mean LightGCN propagation of given layer-0 embeddings."""
        return light_propagate(user_x, item_x, self.num_layers,
                               *sparse_aggregations(self.conv, self.adj_ui, self.adj_iu))

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.propagate(self.user_emb.weight, self.item_emb.weight)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        u, i = self.get_embedding()
        ub, pb, nb = u[batch.users], i[batch.pos], i[batch.neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        reg = self.reg_weight * l2_reg(self.user_emb(batch.users), self.item_emb(batch.pos),
                                       self.item_emb(batch.neg))
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'embedding_dim={self.embedding_dim}, num_layers={self.num_layers})')
