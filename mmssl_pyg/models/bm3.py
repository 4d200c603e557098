"""BM3: bootstrapped multimodal latent representations, trained without negative samples."""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import RecGraph
from ..nn.conv import BipartiteConv
from ..nn.features import FeatureNorm
from ..nn.propagation import light_propagate, sparse_aggregations
from ..utils.options import (
    Choice,
    Formerly,
    NoneMeans,
    NonNegative,
    NonNegativeInt,
    PositiveInt,
    Range,
    Ratio,
)
from ._common import modality_features, register_features, xavier_normal_linear
from .base import Batch, Recommender


def _cosine_loss(online: Tensor, target: Tensor) -> Tensor:
    """``1 - mean cos(online, target)`` with the target treated as a constant."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(Recommender):
    r"""BM3 from Zhou et al., `"Bootstrap Latent Representations for Multi-modal
    Recommendation" <https://arxiv.org/abs/2207.05969>`_ (WWW 2023).

    A LightGCN encoder gives :math:`\mathbf{e}_u` and :math:`\mathbf{e}_i` (plus the item's ID
    embedding); every modality is projected to the same size,
    :math:`\mathbf{e}^m_i = \mathbf{W}_m \mathbf{x}^m_i + \mathbf{b}_m`. There is no negative
    sampling and no target network: the *target view* of a representation is the
    representation itself under dropout with no gradient,
    :math:`\tilde{\mathbf{e}} = \mathrm{sg}(\mathrm{Dropout}_p(\mathbf{e}))`
    (:meth:`target_view`), and the *online view* goes through a shared linear predictor
    :math:`f_p`. For an observed pair :math:`(u, i)`, with
    :math:`\mathcal{C}(a, b) = 1 - \cos(a, b)`:

    .. math::
        \mathcal{L}_{rec} &= \mathcal{C}(f_p(\mathbf{e}_u), \tilde{\mathbf{e}}_i)
            + \mathcal{C}(f_p(\mathbf{e}_i), \tilde{\mathbf{e}}_u) \\
        \mathcal{L}_{align} &= \sum_m \mathcal{C}(f_p(\mathbf{e}^m_i), \tilde{\mathbf{e}}_i),
        \qquad
        \mathcal{L}_{mask} = \sum_m \mathcal{C}(f_p(\mathbf{e}^m_i), \tilde{\mathbf{e}}^m_i) \\
        \mathcal{L} &= \mathcal{L}_{rec} + \lambda_{cl}(\mathcal{L}_{align} + \mathcal{L}_{mask})
            + \lambda_{reg} \|\cdot\|^2

    where, as in the authors' code, the regulariser is
    :math:`\lambda_{reg}(\|\mathbf{E}_U\|_F + \|\mathbf{E}_I\|_F) / |\mathcal{I}|` on the encoder
    outputs of all users and items (Frobenius norms, not squared). Scores are
    :math:`\langle f_p(\mathbf{e}_u), f_p(\mathbf{e}_i)\rangle`.

    Two points of the authors' training that the shared trainer does not give by itself
    (``docs/baselines-audit.md``; without them BM3 stayed near popularity on TikTok):

    * **Training pairs** (``pair_sampling='interactions'``): the loss runs over
      ``batch_size`` observed (user, item) pairs drawn uniformly from the training
      interactions, so a user counts as often as it has interactions and users may repeat
      in a batch, as in MMRec's loader without negative sampling (``use_neg_sampling:
      False``: each batch is a slice of the shuffled interaction list). The trainer's batch
      (distinct users, one positive each) only sets the number of steps per epoch; its
      negatives are never used. Pairs are drawn with replacement from the global torch
      generator (checkpointed by the trainer), on the CPU so a seed gives the same pairs on
      every device. ``'batch'`` uses the trainer's users and positives instead.
    * **Trainable features** (``train_features=True``): each modality's item features are a
      parameter initialised from the (scaled) raw features, as the authors load them into
      an ``nn.Embedding`` with ``freeze=False``; ``False`` keeps them fixed buffers.

    Args:
        graph: the training graph; needs at least one modality (any number).
        embedding_dim: embedding and projected feature size (default ``64``).
        num_layers: LightGCN layers (default ``1``).
        dropout: dropout ratio :math:`p` of the target views (default ``0.5``).
        reg_weight: :math:`\lambda_{reg}` (default ``0.1``).
        cl_weight: :math:`\lambda_{cl}` (default ``2.0``).
        feature_norm: feature scaling before the projections (default ``'l2'``).
        train_features: learn the item features (default ``True``, the authors' code).
        pair_sampling: ``'interactions'`` (default, the authors' code) or ``'batch'``.
        batch_size: pairs per step with ``pair_sampling='interactions'``; ``None`` (default)
            draws as many as the trainer's batch has users. ``mmssl-pyg train`` and ``tune``
            set it to the trainer's ``batch_size``.

    Defaults are the authors' best setting for Amazon Baby (enoche/BM3 README; layers 1,
    dropout 0.5, reg 0.1) and MMRec's ``BM3.yaml`` (``cl_weight`` 2.0).
    """
    min_modalities = 1

    def __init__(self, graph: RecGraph, embedding_dim: PositiveInt = 64,
                 num_layers: NonNegativeInt = 1, dropout: Ratio = 0.5,
                 reg_weight: NonNegative = 0.1, cl_weight: NonNegative = 2.0,
                 feature_norm: Annotated[FeatureNorm, Formerly('feat_norm')] = 'l2',
                 train_features: bool = True,
                 pair_sampling: Annotated[str, Choice('interactions', 'batch')] = 'interactions',
                 batch_size: Annotated[int | None, Range(1),
                                       NoneMeans("as many pairs as the trainer's batch")] = None):
        super().__init__(graph)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.pair_sampling = pair_sampling
        self.batch_size = batch_size
        self.train_features = train_features
        self.modality_names = register_features(self, graph.features, feature_norm)
        if self.train_features:  # the scaled features become the initial value of a parameter
            for j in range(len(self.modality_names)):
                setattr(self, f'feat_{j}',
                        torch.nn.Parameter(self._buffers.pop(f'feat_{j}').clone()))
        # training interactions, kept on the CPU: the pairs are drawn there
        self._train_pairs = graph.train_edge_index.detach().cpu().long()
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.predictor = xavier_normal_linear(embedding_dim, embedding_dim)
        self.projections = torch.nn.ModuleList(
            [xavier_normal_linear(f.size(1), embedding_dim) for f in modality_features(self)])
        self.conv = BipartiteConv()
        self.register_adjacency(graph)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        for lin in [self.predictor, *self.projections]:
            torch.nn.init.xavier_normal_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    def encode(self) -> tuple[Tensor, Tensor]:
        """Online encoder output ``(e_u, e_i)`` before the predictor."""
        u, i = light_propagate(self.user_emb.weight, self.item_emb.weight, self.num_layers,
                               *sparse_aggregations(self.conv, self.adj_ui, self.adj_iu))
        return u, i + self.item_emb.weight

    def target_view(self, x: Tensor) -> Tensor:
        """The dropout-perturbed, gradient-free target view of ``x`` (identity in eval mode)."""
        with torch.no_grad():
            return F.dropout(x.detach(), self.dropout, self.training)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        u, i = self.encode()
        return self.predictor(u), self.predictor(i)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Checkpoints written before the features became parameters (e629e55) hold no
        # feat_<j>: their model used the fixed scaled features, which is what a freshly built
        # model holds, so those entries are not reported missing.
        absent = [f'{prefix}feat_{j}' for j in range(len(self.modality_names))
                  if self.train_features and f'{prefix}feat_{j}' not in state_dict]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for key in absent:
            if key in missing_keys:
                missing_keys.remove(key)

    def training_pairs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The (users, items) pairs the loss of ``batch`` runs over (see ``pair_sampling``)."""
        if self.pair_sampling == 'batch':
            return batch.users, batch.pos
        n = self.batch_size or len(batch)
        pick = torch.randint(self._train_pairs.size(1), (n,))
        users, items = self._train_pairs[:, pick].to(batch.users.device)
        return users, items

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        users, items = self.training_pairs(batch)
        u, i = self.encode()
        ub, ib = u[users], i[items]
        u_target, i_target = self.target_view(ub), self.target_view(ib)
        rec = _cosine_loss(self.predictor(ub), i_target) + \
            _cosine_loss(self.predictor(ib), u_target)
        align = mask = ub.new_zeros(())
        for lin, f in zip(self.projections, modality_features(self)):
            fm = lin(f[items])
            fm_online = self.predictor(fm)
            align = align + _cosine_loss(fm_online, i_target)
            mask = mask + _cosine_loss(fm_online, self.target_view(fm))
        reg = self.reg_weight * (u.norm() + i.norm()) / self.num_items
        cl = self.cl_weight * (align + mask)
        return {'loss': rec + cl + reg, 'rec': rec, 'align': align, 'mask': mask, 'reg': reg}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modality_names}, embedding_dim={self.embedding_dim}, '
                f'num_layers={self.num_layers}, dropout={self.dropout}, '
                f'pair_sampling={self.pair_sampling!r}, train_features={self.train_features})')
