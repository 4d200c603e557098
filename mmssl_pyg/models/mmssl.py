r"""MMSSL: multi-modal self-supervised learning for recommendation (WWW 2023)."""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from ..data.graph import RecGraph, csr_rowptr, unique_edges
from ..nn.adjacency import AdjLayout, BipartiteAdjacency
from ..nn.attention import CrossModalAttention
from ..nn.conv import BipartiteConv
from ..nn.critic import RelationCritic
from ..nn.critic_memory import check_critic_memory
from ..nn.encoder import (
    ColdItems,
    ContentScale,
    MMSSLEmbeddings,
    cold_item_modal,
    collaborative_modality_embeddings,
    fuse_modalities,
    high_order_connectivity,
    modality_aware_views,
    modality_dependency,
    modality_tokens,
)
from ..nn.features import FeatureNorm
from ..nn.generator import ModalityRelationGenerator
from ..nn.gumbel import GumbelFormula, gumbel_real_rows, normalised_rows, softmax_is_sparse
from ..nn.losses import (
    ClPairing,
    contrastive_pairs,
    critic_objective,
    cross_modal_info_nce,
    projected_gradient_penalty,
    relation_reconstruction_loss,
    sampled_generator_loss,
)
from ..nn.lowrank import LowRankRows
from ..nn.topk import _csr_gather
from ..utils.options import (
    Choice,
    Neutral,
    NoneMeans,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Range,
    Ratio,
    UnitInterval,
)
from ._common import modality_features, register_features
from .base import Batch, Recommender, bpr_loss, l2_reg
from .modality_graphs import ModalityGraphs

ABLATIONS = (None, 'wo_asl', 'wo_cl', 'wo_gt', 'rp_gae')
_CACHE_KEY = 'mmssl_forward'


class MMSSL(Recommender):
    r"""MMSSL from Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
    <https://arxiv.org/abs/2302.10632>`_ (WWW 2023).

    Each equation is one named function or module (``docs/EQUATIONS.md``), and
    :meth:`encode` reads them in the paper's order:

    - Eqs. 1-3, relation generator: :class:`~mmssl_pyg.nn.ModalityRelationGenerator`
      (``project``, ``relation_rows``, ``topk``) and
      :func:`~mmssl_pyg.nn.encoder.collaborative_modality_embeddings`; each batch user's
      top-:math:`k` items (:math:`k = \max(1, \lfloor \text{rate} \cdot n_i \rfloor)`) become
      the modality graphs :math:`\hat{\mathcal{G}}^m` at :meth:`on_epoch_end`
      (:class:`~mmssl_pyg.models.modality_graphs.ModalityGraphs`).
    - Eqs. 4-7, adversarial self-augmentation: :class:`~mmssl_pyg.nn.RelationCritic`, the real
      rows :func:`~mmssl_pyg.nn.gumbel.gumbel_real_rows` and the WGAN-GP losses of
      :mod:`mmssl_pyg.nn.losses`.
    - Eqs. 8-12: :mod:`mmssl_pyg.nn.encoder` (views, attention, high-order connectivity,
      fusion) and :func:`~mmssl_pyg.nn.cross_modal_info_nce` (Eq. 11); the loss (Eqs. 13-14)
      is :math:`\mathcal{L}_{BPR} + \lambda_{adv}\mathcal{L}_G + \lambda_{cl}\sum_m
      \mathcal{L}^m_{CL}` + L2 terms.

    Nothing ``users x items`` or ``items x items`` is allocated (relation rows are ``batch x
    items``, in factored form); a critic (:math:`n_i^2/4` weights) that does not fit in memory
    is refused (:mod:`mmssl_pyg.nn.critic_memory`; ``critic_columns`` bounds it).

    **Defaults.** ``MMSSL(graph)`` gives the paper's and released code's values (those of
    ``configs/mmssl-paper.yaml``, whose ``default`` block is empty). ``mmssl-pyg train --model
    mmssl`` runs this library's preset instead (``configs/mmssl.yaml``: 3 layers, relative
    content terms, tuned weights); :func:`mmssl_pyg.training.from_preset` builds that model in
    Python, ``from_preset('mmssl', graph, 'tiktok')``, and ``from_preset('mmssl-paper', graph,
    'tiktok')`` the paper's with its per-dataset values.

    **Training protocol** (:mod:`mmssl_pyg.models.base`): per mini-batch :meth:`critic_loss`
    (Adam on :meth:`critic_parameters`), then :meth:`loss`, which reuses the forward pass
    cached on ``batch.cache``; :meth:`on_epoch_end` after each epoch.

    Args:
        graph: the training graph; needs at least one item modality.
        embedding_dim: :math:`d` (default ``64``).
        num_layers: LightGCN layers :math:`L` of Eq. 10 (default ``2``).
        num_heads: attention heads of Eq. 9 (default ``4``).
        feature_dropout: dropout :math:`p` of the feature projection (default ``0.2``).
        norm: normalisation of Eq. 2 and Eq. 8, ``'sym'`` (default,
            :math:`1/\sqrt{|N_u||N_i|}`) or ``'row'`` (one-sided, the release's).
        feature_norm: ``'standard'`` (default), ``'l2'`` or ``'none'``; see
            :mod:`mmssl_pyg.nn.features` (``'none'`` reproduces the release).
        topk_rate: generated neighbours per user as a fraction of the items (default ``0.01``).
        modality_mix, fusion_weight: :math:`\mu` (Eq. 10), :math:`\omega` (Eq. 12) (``0.36``,
            ``0.55``).
        mix_scale, fusion_scale: length of the unit-norm content terms of Eq. 10 and Eq. 12:
            ``'unit'`` (default, the paper) or ``'relative'`` (the mean row norm of the
            collaborative table they are added to, so :math:`\mu`, :math:`\omega` are
            relative weights; :func:`~mmssl_pyg.nn.encoder.content_scale`).
        cold_items: Eq. 2 for items without training interactions: ``'none'`` (default, the
            paper: their :math:`\mathbf{i}^m` is zero, so they are never generated neighbours
            and get no content in Eq. 12) or ``'features'`` (their own projected features,
            :func:`~mmssl_pyg.nn.encoder.cold_item_modal`).
        cl_weight, cl_temperature: :math:`\lambda_{cl}`, :math:`\tau_c` (``0.03``, ``0.5``).
        cl_intra_view_negatives: add the release's intra-view negatives (default ``False``).
        cl_pairing: which views Eq. 11 contrasts: ``'overall'`` (default, the paper: each
            :math:`\mathbf{H}^m_u` against :math:`\mathbf{e}^*_u`), ``'items'`` (also each
            :math:`\mathbf{H}^m_i` against :math:`\mathbf{e}^*_i` on the batch's positive items)
            or ``'views'`` (:math:`\mathbf{H}^m_u` against :math:`\mathbf{H}^{m'}_u`, two or
            more modalities); :func:`~mmssl_pyg.nn.losses.contrastive_pairs`.
        adv_weight: :math:`\lambda_{adv}` (default ``1e-4``).
        gumbel_scale, gumbel_temperature: :math:`s`, :math:`\tau` of Eq. 5 (``1e-5``, ``0.005``).
        gumbel_formula: ``'paper'`` (default) or ``'release'``
            (:func:`~mmssl_pyg.nn.gumbel.gumbel_transform`).
        aux_weight: :math:`\lambda` of Eq. 5 (default ``100``).
        gp_weight: :math:`\gamma` of Eq. 7 (default ``0.3``).
        critic_dropout, critic_negative_slope, critic_output_scale: of the critic
            (:class:`~mmssl_pyg.nn.RelationCritic`; ``(0.31, 0.5)``, ``0.2``, ``1.0``).
        max_critic_memory: byte budget of the critic check (default: free device memory).
        critic_batch_size: batch users assumed by the critic memory check (default ``1024``).
        critic_columns: the critic reads this many random item columns per batch
            (:mod:`mmssl_pyg.nn.critic`); ``None`` (default): all items, as in the paper.
        gp_samples: Eq. 7's penalty averaged over this many uniformly drawn interpolates
            (unbiased; :func:`~mmssl_pyg.nn.losses.projected_gradient_penalty`; default
            ``64``); ``None``: every interpolate, as in the paper.
        adv_samples: :math:`\mathcal{L}_G` (Eq. 6) averaged over this many uniformly drawn
            batch users, the same in every modality (unbiased up to the critic's batch-norm
            statistics; default ``128``); ``None``: every batch user, as in the paper.
        reg_weight, modality_reg_weight: L2 weights on the batch's final embeddings and on its
            :math:`\mathbf{u}^m, \mathbf{i}^m` (``1e-5``, ``1e-5``).
        ablation: ``None`` (default), ``'wo_asl'`` (no critic, no :math:`\mathcal{L}_G`),
            ``'wo_cl'`` (:math:`\lambda_{cl}=0`), ``'wo_gt'`` (real rows: the row-normalised
            :math:`\mathbf{A}_B`) or ``'rp_gae'`` (the critic replaced by a graph auto-encoder,
            :func:`~mmssl_pyg.nn.losses.relation_reconstruction_loss`).
        item_block_size: items scored at once by the top-k search (default ``4096``).
        adj_layout: connectivity handed to the message-passing layers: ``'csr'`` (default,
            fastest), ``'coo'``, ``'edge_index'`` or ``'sparse_tensor'`` (needs torch-sparse).
    """

    min_modalities = 1

    def __init__(
            self, graph: RecGraph, embedding_dim: PositiveInt = 64,
            num_layers: NonNegativeInt = 2, num_heads: PositiveInt = 4,
            feature_dropout: Ratio = 0.2, norm: Annotated[str, Choice('sym', 'row')] = 'sym',
            feature_norm: FeatureNorm = 'standard',
            topk_rate: Annotated[float, Range(0, 1, low_open=True)] = 0.01,
            modality_mix: UnitInterval = 0.36, fusion_weight: UnitInterval = 0.55,
            mix_scale: ContentScale = 'unit', fusion_scale: ContentScale = 'unit',
            cold_items: Annotated[ColdItems, Neutral('none')] = 'none',
            cl_weight: NonNegative = 0.03, cl_temperature: Positive = 0.5,
            cl_intra_view_negatives: bool = False,
            cl_pairing: Annotated[ClPairing, Neutral('overall')] = 'overall',
            adv_weight: NonNegative = 1e-4, gumbel_scale: NonNegative = 1e-5,
            gumbel_temperature: Positive = 0.005, gumbel_formula: GumbelFormula = 'paper',
            aux_weight: NonNegative = 100.0, gp_weight: NonNegative = 0.3,
            critic_dropout: Annotated[tuple[float, float],
                                      Range(0, 1, high_open=True)] = (0.31, 0.5),
            critic_negative_slope: NonNegative = 0.2, critic_output_scale: Positive = 1.0,
            max_critic_memory: Annotated[int | None, Range(1),
                                         NoneMeans('free device memory')] = None,
            critic_batch_size: PositiveInt = 1024,
            critic_columns: Annotated[int | None, Range(8),
                                      NoneMeans('every item column')] = None,
            gp_samples: Annotated[int | None, Range(2), NoneMeans('every interpolate')] = 64,
            adv_samples: Annotated[int | None, Range(2), NoneMeans('every batch user')] = 128,
            reg_weight: NonNegative = 1e-5, modality_reg_weight: NonNegative = 1e-5,
            ablation: Annotated[str | None, Choice(*ABLATIONS)] = None,
            item_block_size: PositiveInt = 4096, adj_layout: AdjLayout = 'csr'):
        super().__init__(graph)
        if cl_pairing == 'views' and len(graph.modalities) < 2:
            raise ValueError("cl_pairing='views' contrasts one modality's view with another's "
                             f'and needs two or more modalities; this graph has '
                             f"{list(graph.modalities)}. Use cl_pairing='overall'")
        self.modalities, self.num_modalities = graph.modalities, len(graph.modalities)
        self.ablation = ablation
        self.has_critic = ablation not in ('wo_asl', 'rp_gae')
        self.critic_columns, self.gp_samples = critic_columns, gp_samples
        self.adv_samples = adv_samples
        #: the critic's input width: ``min(critic_columns, n_items)`` (``n_items`` if None)
        self.critic_width = graph.num_items if critic_columns is None else \
            min(critic_columns, graph.num_items)
        if self.has_critic:  # before anything large is allocated
            check_critic_memory(self.critic_width, self.num_modalities * critic_batch_size,
                                max_critic_memory, graph.train_edge_index.device)
        self.embedding_dim, self.num_layers, self.num_heads = embedding_dim, num_layers, num_heads
        self.norm, self.feature_norm, self.adj_layout = norm, feature_norm, adj_layout
        self.topk_rate = topk_rate
        self.k = min(graph.num_items, max(1, math.floor(topk_rate * graph.num_items)))
        self.modality_mix, self.fusion_weight = modality_mix, fusion_weight
        self.mix_scale, self.fusion_scale = mix_scale, fusion_scale
        self.cold_items = cold_items
        self.cl_weight = 0.0 if ablation == 'wo_cl' else cl_weight
        self.cl_temperature, self.cl_intra_view_negatives = cl_temperature, cl_intra_view_negatives
        self.cl_pairing = cl_pairing
        self.adv_weight = 0.0 if ablation == 'wo_asl' else adv_weight
        self.gumbel_scale, self.gumbel_temperature = gumbel_scale, gumbel_temperature
        self.gumbel_formula, self.aux_weight, self.gp_weight = gumbel_formula, aux_weight, gp_weight
        self.reg_weight, self.modality_reg_weight = reg_weight, modality_reg_weight
        self.item_block_size = item_block_size

        self.modality_names = register_features(  # scaled once; content only
            self, {m: graph.features[m] for m in self.modalities}, feature_norm)
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.generator = ModalityRelationGenerator(
            [graph.features[m].size(1) for m in self.modalities], embedding_dim, feature_dropout)
        self.attention = CrossModalAttention(embedding_dim, num_heads)
        self.conv = BipartiteConv()
        self.critic = RelationCritic(self.critic_width, critic_dropout, critic_negative_slope,
                                     critic_output_scale) if self.has_critic else None

        self._register_graphs(graph, norm, adj_layout)
        self.reset_parameters()

    def _register_graphs(self, graph: RecGraph, norm: str, adj_layout: str) -> None:
        """The training graph (deduplicated edges, CSR rows for exclusion and A_B), its
        adjacencies, and the generated modality graphs of Eq. 8 (the training graph until the
        first swap)."""
        edge_index = unique_edges(graph.train_edge_index, graph.num_items)
        self.register_buffer('train_rowptr', csr_rowptr(edge_index[0], graph.num_users),
                             persistent=False)
        self.register_buffer('train_col', edge_index[1], persistent=False)
        degree = torch.bincount(edge_index[1], minlength=graph.num_items)
        self.register_buffer('cold_index', (degree == 0).nonzero().view(-1), persistent=False)
        self.encoder_adj = BipartiteAdjacency(edge_index, graph.num_users, graph.num_items,
                                              'sym', adj_layout)
        self.generator_adj = self.encoder_adj if norm == 'sym' else BipartiteAdjacency(
            edge_index, graph.num_users, graph.num_items, norm, adj_layout)
        self.graphs = ModalityGraphs(edge_index, graph.num_users, graph.num_items,
                                     self.num_modalities, self.k, norm, adj_layout,
                                     self.generator_adj)

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self):
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)
        self.generator.reset_parameters()
        self.attention.reset_parameters()
        if self.critic is not None:
            self.critic.reset_parameters()

    def critic_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.critic is None else list(self.critic.parameters())

    # ------------------------------------------------------------------ full-graph forward
    def encode(self) -> MMSSLEmbeddings:
        """One full-graph forward pass (Eqs. 1-2 and 8-12)."""
        conv = self.conv
        feats = self.generator.project(modality_features(self))                      # Eq. 1
        user_modal, item_modal = collaborative_modality_embeddings(                  # Eq. 2
            self.generator_adj, conv, feats)
        item_modal = cold_item_modal(item_modal, feats, self.cold_index, self.cold_items)
        user_w, item_w = self.user_emb.weight, self.item_emb.weight
        user_views, item_views = modality_aware_views(self.graphs.adjs, conv,        # Eq. 8
                                                      user_w, item_w)
        user_h, item_h = modality_dependency(self.attention, user_views, item_views)  # Eq. 9
        user_graph, item_graph = high_order_connectivity(                            # Eq. 10
            self.encoder_adj, conv, user_w, item_w, user_h, item_h, self.modality_mix,
            self.num_layers, self.mix_scale)
        user = fuse_modalities(user_graph, user_modal, self.fusion_weight,           # Eq. 12
                               self.fusion_scale)
        item = fuse_modalities(item_graph, item_modal, self.fusion_weight, self.fusion_scale)
        return MMSSLEmbeddings(user, item, feats, user_modal, item_modal, user_views, item_views,
                               user_h, item_h, user_graph, item_graph)

    def forward(self) -> tuple[Tensor, Tensor]:
        """Final user and item embeddings (Eq. 12)."""
        emb = self.encode()
        return emb.user, emb.item

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        return self.forward()

    @torch.no_grad()
    def attention_weights(self) -> tuple[Tensor, Tensor]:
        """Eq. 9's attention across modalities on the current modality graphs:
        ``(users [n_u, heads, M, M], items [n_i, heads, M, M])``, each row a softmax over the
        :math:`M` modality tokens (call :meth:`eval` first to switch feature dropout off)."""
        emb = self.encode()
        _, att = self.attention(modality_tokens(emb.user_views, emb.item_views),
                                return_attention_weights=True)
        return att[:self.num_users], att[self.num_users:]

    # ------------------------------------------------------------------ batch rows
    def _train_entries(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """(local row, item) of the training interactions of ``users``."""
        return _csr_gather(self.train_rowptr, self.train_col, users)

    def interaction_rows(self, users: Tensor) -> Tensor:
        """Dense observed rows :math:`\\mathbf{A}_B` ``[B, n_i]`` (a batch, not all users)."""
        row, col = self._train_entries(users)
        a = self.user_emb.weight.new_zeros(users.numel(), self.num_items)
        a[row, col] = 1.0
        return a

    @torch.no_grad()
    def real_rows(self, users: Tensor, user_star: Tensor, item_star: Tensor,
                  noise: Tensor | None = None, dense: bool | None = None) -> LowRankRows:
        r"""Gumbel-transformed observed rows :math:`\bar{\mathbf{A}}_B` of Eq. 5 (``'wo_gt'``:
        the row-normalised :math:`\mathbf{A}_B`), in factored form.

        Args:
            users: ``[B]`` user ids.
            user_star, item_star: final embeddings ``[B, d]`` of the users, ``[n_i, d]``.
            noise, dense: see :func:`~mmssl_pyg.nn.gumbel.gumbel_real_rows`.
        """
        num = users.numel()
        row, col = self._train_entries(users)
        if self.ablation == 'wo_gt':
            return normalised_rows(row, col, num, self.num_items, user_star.dtype)
        return gumbel_real_rows(row, col, user_star, item_star, self.gumbel_scale,
                                self.gumbel_temperature, self.aux_weight, self.gumbel_formula,
                                noise, dense)

    def _softmax_is_sparse(self) -> bool:  # see nn.gumbel.softmax_is_sparse
        return softmax_is_sparse(self.gumbel_scale, self.gumbel_temperature, self.gumbel_formula)

    def _batch_forward(self, batch: Batch) -> dict:
        emb = self.encode()
        users = batch.users
        out = {'emb': emb}
        row, col = self._train_entries(users)
        modal_b = [u[users] for u in emb.user_modal]
        if self.has_critic:
            out['fake'] = [self.generator.relation_rows(u, i, row, col)
                           for u, i in zip(modal_b, emb.item_modal)]
            if self.critic_width < self.num_items:  # the same columns for real and fake rows
                cols = self.draw_critic_columns().to(users.device)
                out['critic_columns'] = cols
                out['fake'] = [r.select_columns(cols) for r in out['fake']]
        if self.ablation == 'rp_gae':
            out['gae_target'] = (row, col)
        if self.training:  # collect this batch's top-k relations for the next modality graphs
            self._collect_topk(users, modal_b, emb.item_modal, row, col, batch.final)
        return out

    def _collect_topk(self, users: Tensor, modal_b: list[Tensor], item_modal: list[Tensor],
                      row: Tensor, col: Tensor, final: Tensor | None) -> None:
        """See :meth:`~mmssl_pyg.models.modality_graphs.ModalityGraphs.collect_topk`."""
        self.graphs.collect_topk(self.generator, users, modal_b, item_modal, row, col, final,
                                 self.item_block_size)

    def draw_critic_columns(self) -> Tensor:
        """``critic_width`` sorted distinct item ids, from torch's default CPU generator."""
        return torch.randperm(self.num_items)[:self.critic_width].sort().values

    # ------------------------------------------------------------------ losses
    def critic_loss(self, batch: Batch) -> dict[str, Tensor]:
        """WGAN-GP critic objective (Eq. 7) on detached fake rows; caches the forward pass on
        ``batch.cache`` for :meth:`loss`."""
        if not self.has_critic:
            raise RuntimeError(f'MMSSL with ablation={self.ablation!r} has no critic')
        out = self._batch_forward(batch)
        batch.cache[_CACHE_KEY] = out
        emb, users = out['emb'], batch.users
        real = self.real_rows(users, emb.user[users].detach(), emb.item.detach())
        if 'critic_columns' in out:
            real = real.select_columns(out['critic_columns'])
        out['real'] = real  # only the critic step reads the real rows
        # the penalty is looked up here, so benchmarks/speed.py can time it
        return critic_objective(self.critic, real, out['fake'], self.gp_weight, self.gp_samples,
                                projected_gradient_penalty)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        out = batch.cache.pop(_CACHE_KEY, None) or self._batch_forward(batch)
        emb: MMSSLEmbeddings = out['emb']
        users, pos, neg = batch.users, batch.pos, batch.neg
        ub, pb, nb = emb.user[users], emb.item[pos], emb.item[neg]
        bpr = bpr_loss((ub * pb).sum(-1), (ub * nb).sum(-1))
        reg = self.reg_weight * l2_reg(ub, pb, nb)
        for u, i in zip(emb.user_modal, emb.item_modal):
            reg = reg + self.modality_reg_weight * l2_reg(u[users], i[pos], i[neg])
        zero = bpr.new_zeros(())
        contrastive = zero
        if self.cl_weight > 0:
            pairs = contrastive_pairs(self.cl_pairing, emb.user_views, ub,  # Eq. 11
                                      emb.item_views, pb, users, pos)
            contrastive = sum(cross_modal_info_nce(a, t, self.cl_temperature,
                                                   self.cl_intra_view_negatives, ids)
                              for a, t, ids in pairs)
        generator = zero
        if self.has_critic:
            generator = sampled_generator_loss(self.critic, out['fake'], self.adv_samples)
        elif self.ablation == 'rp_gae':
            generator = relation_reconstruction_loss(
                [u[users] for u in emb.user_modal], emb.item_modal, *out['gae_target'])
        total = bpr + reg + self.adv_weight * generator + self.cl_weight * contrastive
        return {'loss': total, 'bpr': bpr, 'reg': reg, 'generator': generator,
                'contrastive': contrastive}

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modalities}, embedding_dim={self.embedding_dim}, '
                f'num_layers={self.num_layers}, num_heads={self.num_heads}, k={self.k}, '
                f'ablation={self.ablation})')

    # ------------------------------------------------------------------ generated graphs
    # The Recommender hooks of the modality graphs kept in self.graphs (ModalityGraphs): the
    # swap at each epoch's end, the data-parallel gather, the checkpointed neighbours.
    def on_epoch_end(self, epoch: int) -> None:
        self.update_modality_graphs()

    def gather_epoch_state(self, all_gather) -> None:
        """Data-parallel training: every replica swaps in the same modality graphs (see
        :meth:`~mmssl_pyg.models.modality_graphs.ModalityGraphs.gather`)."""
        self.graphs.gather(all_gather)

    def update_modality_graphs(self) -> int:
        """Swap in the modality graphs collected since the last swap; returns the number of
        users whose neighbours changed."""
        return self.graphs.update()

    def modality_edge_index(self, modality: int) -> Tensor:
        """Current (user, item) edges of the modality graph :math:`\\hat{\\mathcal{G}}^m`."""
        return self.graphs.edge_index(modality)

    @property
    def train_edge_index(self) -> Tensor:
        """Deduplicated training edges, sorted by (user, item)."""
        return self.graphs.train_edge_index

    def get_extra_state(self) -> dict:
        return self.graphs.state()  # copies: the live tensors are updated in place

    def set_extra_state(self, state: dict) -> None:
        self.graphs.load_state(state)
