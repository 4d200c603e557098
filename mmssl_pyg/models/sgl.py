"""SGL: self-supervised graph learning with edge-dropout views on a LightGCN encoder."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.graph import RecGraph, bipartite_adjacency
from ..nn.conv import BipartiteConv
from ..nn.propagation import light_propagate, sparse_aggregations
from ..utils.options import NonNegative, NonNegativeInt, Positive, PositiveInt, Ratio
from ._common import edge_dropout, info_nce
from .base import Batch, Recommender, bpr_loss, l2_reg


class SGL(Recommender):
    r"""SGL-ED from Wu et al., `"Self-supervised Graph Learning for Recommendation"
    <https://arxiv.org/abs/2010.10783>`_ (SIGIR 2021).

    A LightGCN encoder is trained with BPR on the training graph plus an InfoNCE loss between
    two augmented views of the graph. Each view keeps ``int(E * (1 - ssl_ratio))`` edges drawn
    uniformly (edge dropout, "ED"), re-normalised symmetrically; both views are re-drawn at
    the start of every epoch (:meth:`on_epoch_start`). For the users and the positive items of
    a batch:

    .. math::
        \mathcal{L}_{ssl} = -\sum_{n \in B} \log
        \frac{\exp(\cos(\mathbf{z}'_n, \mathbf{z}''_n)/\tau)}
             {\sum_{m \in B} \exp(\cos(\mathbf{z}'_n, \mathbf{z}''_m)/\tau)}

    over users and items separately, with :math:`\mathbf{z}', \mathbf{z}''` the LightGCN
    outputs on the two views. The loss is
    :math:`\mathcal{L}_{BPR} + \lambda_1 \mathcal{L}_{ssl} + \lambda_2 \|\Theta_B\|^2`.

    The negatives are the other users (items) of the batch; the authors' SGL-Torch code
    contrasts against all users (items). Scores use the un-augmented graph.

    Args:
        graph: the training graph.
        embedding_dim: embedding size (default ``64``).
        num_layers: LightGCN layers (default ``3``).
        reg_weight: L2 weight :math:`\lambda_2` on the batch's layer-0 embeddings
            (default ``1e-4``).
        ssl_ratio: edge dropout ratio :math:`\rho` of each view (default ``0.1``).
        ssl_temp: InfoNCE temperature :math:`\tau` (default ``0.2``).
        ssl_weight: weight :math:`\lambda_1` of the InfoNCE loss (default ``0.1``).

    All defaults are the authors' ``conf/SGL.ini`` (wujcan/SGL-Torch).
    """

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 num_layers: NonNegativeInt = 3, reg_weight: NonNegative = 1e-4,
                 ssl_ratio: Ratio = 0.1, ssl_temp: Positive = 0.2, ssl_weight: NonNegative = 0.1):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.ssl_ratio = ssl_ratio
        self.ssl_temp = ssl_temp
        self.ssl_weight = ssl_weight
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.conv = BipartiteConv()
        self.register_adjacency(graph)
        self.register_buffer('train_edge_index', graph.train_edge_index, persistent=False)
        #: The two augmented graphs of the current epoch: ``[(adj_ui, adj_iu), ...]``.
        self.views: list[tuple[Tensor, Tensor]] | None = None
        #: Their kept edges (``[2, E_kept]`` each), for inspection and tests.
        self.view_edges: list[Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        self.views = self.view_edges = None

    def draw_views(self) -> None:
        """Draw the two edge-dropout views (uses the global torch RNG)."""
        edges = [edge_dropout(self.train_edge_index, self.ssl_ratio) for _ in range(2)]
        self.view_edges = edges
        self.views = [bipartite_adjacency(e, self.num_users, self.num_items, norm='sym')
                      for e in edges]

    def on_epoch_start(self, epoch: int) -> None:
        self.draw_views()

    def propagate(self, adj_ui: Tensor, adj_iu: Tensor) -> tuple[Tensor, Tensor]:
        return light_propagate(self.user_emb.weight, self.item_emb.weight, self.num_layers,
                               *sparse_aggregations(self.conv, adj_ui, adj_iu))

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.propagate(self.adj_ui, self.adj_iu)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        if self.views is None:  # called outside the trainer's epoch loop
            self.draw_views()
        u, i = self.get_embedding()
        ub, pb, nb = u[batch.users], i[batch.pos], i[batch.neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        reg = self.reg_weight * l2_reg(self.user_emb(batch.users), self.item_emb(batch.pos),
                                       self.item_emb(batch.neg))
        (u1, i1), (u2, i2) = (self.propagate(*view) for view in self.views)
        users, items = batch.users.unique(), batch.pos.unique()
        ssl = info_nce(u1[users], u2[users], self.ssl_temp) + \
            info_nce(i1[items], i2[items], self.ssl_temp)
        ssl = self.ssl_weight * ssl
        return {'loss': bpr + reg + ssl, 'bpr': bpr, 'reg': reg, 'ssl': ssl}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'embedding_dim={self.embedding_dim}, num_layers={self.num_layers}, '
                f'ssl_ratio={self.ssl_ratio})')
