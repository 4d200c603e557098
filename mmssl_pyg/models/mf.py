"""Matrix factorisation trained with BPR (MF-BPR)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.graph import RecGraph
from ..utils.options import NonNegative, PositiveInt
from .base import Batch, Recommender, bpr_loss, l2_reg


class MF(Recommender):
    r"""Matrix factorisation with the Bayesian personalised ranking loss, from Rendle et al.,
    `"BPR: Bayesian Personalized Ranking from Implicit Feedback"
    <https://arxiv.org/abs/1205.2618>`_ (UAI 2009).

    .. math::
        \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i, \qquad
        \mathcal{L} = -\frac{1}{|B|}\sum_{(u,i,j)} \log \sigma(\hat{y}_{ui} - \hat{y}_{uj})
        + \lambda \cdot \frac{1}{2|B|}\left(\|\mathbf{e}_u\|^2 + \|\mathbf{e}_i\|^2
        + \|\mathbf{e}_j\|^2\right)

    Args:
        graph: the training graph (only its sizes are used).
        embedding_dim: embedding size (default ``64``, the MMRec toolkit's ``embedding_size``).
        reg_weight: L2 weight :math:`\lambda` on the batch's embeddings (default ``1e-4``, a
            value of MMRec's ``BPR.yaml`` search grid; not tuned here).
    """

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 reg_weight: NonNegative = 1e-4):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        ub = self.user_emb(batch.users)
        pb, nb = self.item_emb(batch.pos), self.item_emb(batch.neg)
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        reg = self.reg_weight * l2_reg(ub, pb, nb)
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'embedding_dim={self.embedding_dim})')
