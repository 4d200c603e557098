"""VBPR: BPR matrix factorisation with a visual (content) factor."""
from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from ..data.graph import RecGraph
from ..nn.features import FeatureNorm
from ..utils.options import Formerly, NonNegative, PositiveInt
from ._common import modality_features, register_features
from .base import Batch, Recommender, bpr_loss, l2_reg


class VBPR(Recommender):
    r"""VBPR from He and McAuley, `"VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback" <https://arxiv.org/abs/1510.01784>`_ (AAAI 2016).

    .. math::
        \hat{y}_{ui} = \beta_i + \boldsymbol{\gamma}_u^\top \boldsymbol{\gamma}_i
        + \boldsymbol{\theta}_u^\top (\mathbf{E} \mathbf{f}_i)
        + \boldsymbol{\beta}'^\top \mathbf{f}_i

    with :math:`\boldsymbol{\gamma}` the ID factors, :math:`\mathbf{f}_i` the item's content
    features (all modalities concatenated, as the MMRec toolkit does for image + text),
    :math:`\mathbf{E}` a learned projection, :math:`\boldsymbol{\theta}_u` the user's matching
    "visual" factors and :math:`\beta_i + \boldsymbol{\beta}'^\top\mathbf{f}_i` the item bias and
    the visual bias. The score is an inner product of
    :math:`[\boldsymbol{\gamma}_u, \boldsymbol{\theta}_u, 1]` and
    :math:`[\boldsymbol{\gamma}_i, \mathbf{E}\mathbf{f}_i, \beta_i + \boldsymbol{\beta}'^\top
    \mathbf{f}_i]`, which is what :meth:`get_embedding` returns (the user-independent
    :math:`\alpha + \beta_u` of the paper do not change a user's ranking and are left out).

    Trained with BPR and an L2 penalty on the batch's user and item vectors.

    Args:
        graph: the training graph; needs at least one modality.
        embedding_dim: size :math:`K` of the ID factors (default ``64``, MMRec's
            ``embedding_size``).
        visual_dim: size :math:`K'` of the content factors (default ``64``; MMRec uses
            ``embedding_size`` for both parts).
        reg_weight: L2 weight (default ``1e-4``, a value of MMRec's ``VBPR.yaml`` grid; not
            tuned here).
        use_bias: include the item bias and the visual bias (default ``True``, as in the
            paper; MMRec's version has neither).
        feature_norm: feature scaling, see :func:`~mmssl_pyg.nn.features.scale_features`
            (default ``'l2'`` per modality; ``'none'`` feeds raw features like MMRec).
    """
    min_modalities = 1

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 visual_dim: PositiveInt = 64, reg_weight: NonNegative = 1e-4,
                 use_bias: bool = True,
                 feature_norm: Annotated[FeatureNorm, Formerly('feat_norm')] = 'l2'):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.visual_dim = visual_dim
        self.reg_weight = reg_weight
        self.use_bias = use_bias
        self.modality_names = register_features(self, graph.features, feature_norm)
        feat_dim = sum(f.size(1) for f in modality_features(self))
        self.user_id = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.user_visual = torch.nn.Embedding(graph.num_users, visual_dim)
        self.item_id = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.projection = torch.nn.Linear(feat_dim, visual_dim, bias=False)  # E
        if use_bias:
            self.item_bias = torch.nn.Embedding(graph.num_items, 1)
            self.visual_bias = torch.nn.Linear(feat_dim, 1, bias=False)  # beta'
        self.reset_parameters()

    def reset_parameters(self):
        for emb in (self.user_id, self.user_visual, self.item_id):
            torch.nn.init.xavier_uniform_(emb.weight)
        torch.nn.init.xavier_normal_(self.projection.weight)
        if self.use_bias:
            torch.nn.init.zeros_(self.item_bias.weight)
            torch.nn.init.zeros_(self.visual_bias.weight)

    def item_features(self) -> Tensor:
        """``[num_items, sum_m d_m]``: the modalities' (scaled) features side by side."""
        return torch.cat(modality_features(self), dim=1)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        f = self.item_features()
        user = [self.user_id.weight, self.user_visual.weight]
        item = [self.item_id.weight, self.projection(f)]
        if self.use_bias:
            user.append(self.user_id.weight.new_ones(self.num_users, 1))
            item.append(self.item_bias.weight + self.visual_bias(f))
        return torch.cat(user, dim=1), torch.cat(item, dim=1)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        u, i = self.get_embedding()
        ub, pb, nb = u[batch.users], i[batch.pos], i[batch.neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        d = self.embedding_dim + self.visual_dim  # the constant 1 column is not penalised
        reg = self.reg_weight * l2_reg(ub[:, :d], pb, nb)
        return {'loss': bpr + reg, 'bpr': bpr, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'visual_dim={self.visual_dim})')
