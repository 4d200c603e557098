r"""MMSSL: multi-modal self-supervised learning for recommendation (WWW 2023)."""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import RecGraph, csr_rowptr
from ..nn.adjacency import LAYOUTS, BipartiteAdjacency
from ..nn.attention import CrossModalAttention
from ..nn.conv import BipartiteConv
from ..nn.critic import RelationCritic, check_critic_memory
from ..nn.encoder import (
    collaborative_modality_embeddings,
    fuse_modalities,
    high_order_connectivity,
    modality_aware_views,
    modality_dependency,
    modality_tokens,
)
from ..nn.features import scale_features
from ..nn.generator import ModalityRelationGenerator
from ..nn.gumbel import gumbel_real_rows, softmax_is_sparse
from ..nn.losses import (
    cross_modal_info_nce,
    projected_gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from ..nn.lowrank import LowRankRows
from ..nn.topk import _csr_gather
from ._common import check_optional_int
from .base import Batch, Recommender, bpr_loss, l2_reg
from .modality_graphs import ModalityGraphs

ABLATIONS = (None, 'wo_asl', 'wo_cl', 'wo_gt', 'rp_gae')
_CACHE_KEY = 'mmssl_forward'


class MMSSLEmbeddings(NamedTuple):
    """Everything one full-graph forward pass of :class:`MMSSL` computes."""
    user: Tensor                 #: :math:`\mathbf{e}^*_u` (Eq. 12), ``[n_u, d]``
    item: Tensor                 #: :math:`\mathbf{e}^*_i` (Eq. 12), ``[n_i, d]``
    features: list[Tensor]       #: :math:`\mathbf{F}^m` per modality, ``[n_i, d]``
    user_modal: list[Tensor]     #: :math:`\mathbf{u}^m` (Eq. 2), ``[n_u, d]``
    item_modal: list[Tensor]     #: :math:`\mathbf{i}^m` (Eq. 2), ``[n_i, d]``
    user_views: list[Tensor]     #: :math:`\mathbf{H}^m_u` (Eq. 8), ``[n_u, d]``
    item_views: list[Tensor]     #: :math:`\mathbf{H}^m_i` (Eq. 8), ``[n_i, d]``
    user_fused: Tensor           #: :math:`\mathbf{h}_u` (Eq. 9), ``[n_u, d]``
    item_fused: Tensor           #: :math:`\mathbf{h}_i` (Eq. 9), ``[n_i, d]``
    user_graph: Tensor           #: :math:`\bar{\mathbf{E}}_u` (Eq. 10), ``[n_u, d]``
    item_graph: Tensor           #: :math:`\bar{\mathbf{E}}_i` (Eq. 10), ``[n_i, d]``


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """Run ``module`` without gradients for its parameters (inputs still get theirs)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class MMSSL(Recommender):
    r"""MMSSL from Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
    <https://arxiv.org/abs/2302.10632>`_ (WWW 2023).

    **Relation generator** (Eqs. 1-3, :class:`~mmssl_pyg.nn.ModalityRelationGenerator`):
    :math:`\mathbf{F}^m = \mathrm{Dropout}(\mathbf{X}^m\mathbf{W}^m + \mathbf{b}^m)`,
    :math:`\mathbf{u}^m = \hat{\mathbf{A}}\mathbf{F}^m`,
    :math:`\mathbf{i}^m = \hat{\mathbf{A}}^{\top}\mathbf{u}^m`, and for the users :math:`B` of a
    mini-batch :math:`\mathbf{S}^m_B = \mathrm{rownorm}(\mathbf{u}^m_B {\mathbf{i}^m}^{\top})`
    with training entries zeroed. Each batch user's top-:math:`k` non-training items
    (:math:`k = \max(1, \lfloor \text{rate} \cdot n_i \rfloor)`) are collected over the epoch
    and become the modality graphs :math:`\hat{\mathcal{G}}^m` at :meth:`on_epoch_end` (users not
    seen keep their previous neighbours; before the first swap the training graph is used).

    **Adversarial self-augmentation** (Eqs. 4-7): a WGAN-GP critic
    (:class:`~mmssl_pyg.nn.RelationCritic`) separates the fake rows :math:`\mathbf{S}^m_B` from
    the Gumbel-transformed real rows

    .. math::
        \bar{\mathbf{A}}_B = \mathrm{rownorm}\big(\mathrm{softmax}((\mathbf{A}_B + s\,
        \mathbf{g})/\tau) + \lambda\,\hat{\mathbf{S}}_B\big),

    :math:`\hat{\mathbf{S}}_B` being the relation of the final embeddings (no gradient).

    **Cross-modal contrastive learning** (Eqs. 8-11): :math:`\mathbf{H}^m_u = \sum_{i \in
    \hat{\mathcal{G}}^m(u)} \hat{c}_{ui}\mathbf{E}_I[i]` (and the item side), multi-head
    attention across modalities, mean pooling to :math:`\mathbf{h}`,
    :math:`\mathbf{E}^{(0)} = \mathbf{E} + \mu\,\mathrm{normalize}(\mathbf{h})`, LightGCN layers
    on the symmetric-normalised training graph, and InfoNCE between
    :math:`\mathbf{H}^m_u` and :math:`\mathbf{e}^*_u` over the batch users.

    **Fusion and loss** (Eqs. 12-14): :math:`\mathbf{e}^* = \bar{\mathbf{E}} + \omega \sum_m
    \mathrm{normalize}(\mathbf{u}^m)` (items alike); :math:`\mathcal{L} = \mathcal{L}_{BPR} +
    \lambda_{adv}\mathcal{L}_G + \lambda_{cl}\sum_m \mathcal{L}^m_{CL}` + L2 terms.

    Nothing of shape ``users x items`` or ``items x items`` is allocated: the relation rows are
    ``batch x items`` and reach the critic in factored form
    (:class:`~mmssl_pyg.nn.critic.LowRankRows`). The critic has :math:`n_i^2/4` first-layer
    weights; the constructor refuses (``ValueError``) a critic that does not fit in memory.

    **Bounded critic** (``critic_columns=C``, not in the paper): for large catalogues the
    critic reads only ``C`` item columns per mini-batch, drawn at random (sorted, without
    replacement) for each batch and used for both its real and its fake rows (and for
    :math:`\mathcal{L}_G` of the same batch); it is then ``Linear(C, C/4) -> ... -> 1``, so
    its parameters are :math:`\approx C^2/4 + C^2/32` whatever :math:`n_i`, and the memory
    check uses ``C``. The columns come from torch's default CPU generator (the stream the
    trainer seeds, per process under torchrun, and saves in checkpoints), so a seed gives the
    same columns on every device. The relation rows are normalised over all items before the
    columns are taken. Input position ``j`` is a different item in every batch, so the critic
    learns statistics of the row values (how peaked, how sparse) rather than per-item
    weights.

    **Training protocol** (see :mod:`mmssl_pyg.models.base`): per mini-batch call
    :meth:`critic_loss` (step :meth:`critic_parameters` with Adam, lr 3e-4, betas (0.5, 0.9)),
    then :meth:`loss` (step :meth:`model_parameters`); the forward pass is computed once and
    cached on ``batch.cache``. Call :meth:`on_epoch_end` after each epoch.

    **Feature scaling.** ``feature_norm='standard'`` (default) standardises every raw feature
    dimension over the items (zero mean, unit variance). Raw features such as TikTok's image
    vectors (values 0-13, mean 2.7) share a large common offset: two random items' raw image
    vectors have cosine 0.86 on average (0.00 once standardised), so every item's projection
    looks alike and the offset dominates the inner products of Eq. 3. The modalities' scales
    also differ (mean row norm 33 for image, 4.5 for audio). Standardising removes the offset,
    puts the modalities on one scale, keeps the per-dimension contrast (``'l2'``, unit rows,
    keeps the offset) and uses no interaction data, so it cannot leak held-out information.
    ``'none'`` reproduces the release.

    Args:
        graph: the training graph; needs at least one item modality.
        embedding_dim: :math:`d` (default ``64``).
        num_layers: LightGCN layers :math:`L` of Eq. 10 (default ``2``).
        num_heads: attention heads of Eq. 9 (default ``4``).
        feature_dropout: dropout :math:`p` of the feature projection (default ``0.2``).
        norm: normalisation of Eq. 2 and Eq. 8, ``'sym'`` (default,
            :math:`1/\sqrt{|N_u||N_i|}`) or ``'row'`` (one-sided, the release's).
        feature_norm: ``'standard'`` (default), ``'l2'`` or ``'none'``; see above.
        topk_rate: generated neighbours per user as a fraction of the items (default ``0.01``).
        modality_mix: :math:`\mu` of Eq. 10 (default ``0.36``).
        fusion_weight: :math:`\omega` of Eq. 12 (default ``0.55``).
        cl_weight: :math:`\lambda_{cl}` (default ``0.03``).
        cl_temperature: :math:`\tau_c` (default ``0.5``).
        cl_intra_view_negatives: add the release's intra-view negatives (default ``False``).
        adv_weight: :math:`\lambda_{adv}` (default ``1e-4``).
        gumbel_scale: :math:`s` of Eq. 5 (default ``1e-5``).
        gumbel_temperature: :math:`\tau` of Eq. 5 (default ``0.005``).
        gumbel_formula: ``'paper'`` (default) or ``'release'``; see
            :func:`~mmssl_pyg.nn.critic.gumbel_transform`.
        aux_weight: :math:`\lambda` of Eq. 5 (default ``100``).
        gp_weight: :math:`\gamma` of Eq. 7 (default ``0.3``).
        critic_dropout: critic dropout rates (default ``(0.31, 0.5)``).
        critic_negative_slope: critic LeakyReLU slope (default ``0.2``; release ``1.0``).
        critic_output_scale: critic output scale (default ``1.0``; release ``100``).
        max_critic_memory: byte budget of the critic check (default: free device memory on
            CUDA, physical memory on CPU).
        critic_batch_size: users per mini-batch, only to size the critic memory check
            (default ``1024``).
        critic_columns: ``C``: the critic reads ``C`` random item columns per batch (see
            above); ``None`` (default) or ``C >= n_items``: all items, as in the paper.
        gp_samples: ``S``: the gradient penalty of Eq. 7 is averaged over ``S`` of the
            batch's interpolates, drawn uniformly (an unbiased estimate of the full mean; see
            :func:`~mmssl_pyg.nn.losses.projected_gradient_penalty`; default ``64``);
            ``None``: every interpolate, as in the paper.
        adv_samples: ``S``: the generator loss :math:`\mathcal{L}_G` (Eq. 6) averages the
            critic's output over the generated rows of ``S`` batch users, drawn uniformly
            per batch (the same users in every modality); an unbiased estimate of the mean
            over the batch up to the critic's batch-norm statistics (default ``256``).
            ``None``: every batch user, as in the paper.
        reg_weight: L2 weight on the batch's final embeddings (default ``1e-5``).
        modality_reg_weight: L2 weight on the batch's :math:`\mathbf{u}^m, \mathbf{i}^m`
            (default ``1e-5``).
        ablation: ``None`` (default), ``'wo_asl'`` (no critic, no :math:`\mathcal{L}_G`, no
            Gumbel), ``'wo_cl'`` (:math:`\lambda_{cl}=0`), ``'wo_gt'`` (real rows are the
            row-normalised :math:`\mathbf{A}_B`) or ``'rp_gae'`` (the critic replaced by a graph
            auto-encoder: BCE between :math:`\sigma(\mathbf{u}^m_B{\mathbf{i}^m}^{\top})` and
            :math:`\mathbf{A}_B`, positives weighted by the negative/positive ratio).
        item_block_size: items scored at once by the top-k search (default ``4096``).
        adj_layout: connectivity handed to the message-passing layers: ``'csr'`` (default,
            fastest), ``'coo'``, ``'edge_index'`` or ``'sparse_tensor'`` (needs torch-sparse).
    """

    min_modalities = 1

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, num_layers: int = 2,
                 num_heads: int = 4, feature_dropout: float = 0.2, norm: str = 'sym',
                 feature_norm: str = 'standard', topk_rate: float = 0.01,
                 modality_mix: float = 0.36, fusion_weight: float = 0.55,
                 cl_weight: float = 0.03, cl_temperature: float = 0.5,
                 cl_intra_view_negatives: bool = False, adv_weight: float = 1e-4,
                 gumbel_scale: float = 1e-5, gumbel_temperature: float = 0.005,
                 gumbel_formula: str = 'paper', aux_weight: float = 100.0,
                 gp_weight: float = 0.3, critic_dropout: tuple[float, float] = (0.31, 0.5),
                 critic_negative_slope: float = 0.2, critic_output_scale: float = 1.0,
                 max_critic_memory: int | None = None, critic_batch_size: int = 1024,
                 critic_columns: int | None = None, gp_samples: int | None = 64,
                 adv_samples: int | None = 256,
                 reg_weight: float = 1e-5,
                 modality_reg_weight: float = 1e-5,
                 ablation: str | None = None, item_block_size: int = 4096,
                 adj_layout: str = 'csr'):
        super().__init__(graph)
        if ablation not in ABLATIONS:
            raise ValueError(f'ablation must be one of {ABLATIONS}, got {ablation!r}')
        if norm not in ('sym', 'row'):
            raise ValueError(f"norm must be 'sym' or 'row', got {norm!r}")
        if adj_layout not in LAYOUTS:
            raise ValueError(f'adj_layout must be one of {LAYOUTS}, got {adj_layout!r}')
        if gumbel_formula not in ('paper', 'release'):
            raise ValueError(f"gumbel_formula must be 'paper' or 'release', got "
                             f'{gumbel_formula!r}')
        self.modalities = graph.modalities
        self.num_modalities = len(self.modalities)
        self.ablation = ablation
        self.has_critic = ablation not in ('wo_asl', 'rp_gae')
        self.critic_columns = check_optional_int('critic_columns', critic_columns, 8,
                                                 '(every item column)')
        self.gp_samples = check_optional_int('gp_samples', gp_samples, 2, '(every interpolate)')
        self.adv_samples = check_optional_int('adv_samples', adv_samples, 2, '(every batch user)')
        #: the critic's input width: ``min(critic_columns, n_items)`` (``n_items`` if None)
        self.critic_width = graph.num_items if critic_columns is None else \
            min(critic_columns, graph.num_items)
        device = graph.train_edge_index.device
        if self.has_critic:  # before anything large is allocated
            check_critic_memory(self.critic_width, self.num_modalities * critic_batch_size,
                                max_critic_memory, device)
        self.embedding_dim, self.num_layers, self.num_heads = embedding_dim, num_layers, num_heads
        self.norm, self.feature_norm, self.adj_layout = norm, feature_norm, adj_layout
        self.topk_rate = topk_rate
        self.k = min(graph.num_items, max(1, math.floor(topk_rate * graph.num_items)))
        self.modality_mix, self.fusion_weight = modality_mix, fusion_weight
        self.cl_weight = 0.0 if ablation == 'wo_cl' else cl_weight
        self.cl_temperature = cl_temperature
        self.cl_intra_view_negatives = cl_intra_view_negatives
        self.adv_weight = 0.0 if ablation == 'wo_asl' else adv_weight
        self.gumbel_scale, self.gumbel_temperature = gumbel_scale, gumbel_temperature
        self.gumbel_formula, self.aux_weight, self.gp_weight = gumbel_formula, aux_weight, gp_weight
        self.reg_weight, self.modality_reg_weight = reg_weight, modality_reg_weight
        self.item_block_size = item_block_size

        # Features (scaled once; content only, no interactions involved).
        for idx, name in enumerate(self.modalities):
            self.register_buffer(f'feat_{idx}', scale_features(graph.features[name],
                                                               feature_norm), persistent=False)
        self.user_emb = torch.nn.Embedding(graph.num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(graph.num_items, embedding_dim)
        self.generator = ModalityRelationGenerator(
            [graph.features[m].size(1) for m in self.modalities], embedding_dim, feature_dropout)
        self.attention = CrossModalAttention(embedding_dim, num_heads)
        self.conv = BipartiteConv()
        self.critic = RelationCritic(self.critic_width, critic_dropout, critic_negative_slope,
                                     critic_output_scale) if self.has_critic else None

        # Training graph: deduplicated edges, CSR rows (exclusion, A_B), adjacencies.
        # (1-D keys: torch.unique(dim=1) is ~20x slower on millions of edges)
        key = torch.unique(graph.train_edge_index[0].long() * graph.num_items
                           + graph.train_edge_index[1].long())  # sorted by (user, item)
        edge_index = torch.stack([key // graph.num_items, key % graph.num_items])
        self.register_buffer('train_rowptr', csr_rowptr(edge_index[0], graph.num_users),
                             persistent=False)
        self.register_buffer('train_col', edge_index[1], persistent=False)
        self.encoder_adj = BipartiteAdjacency(edge_index, graph.num_users, graph.num_items,
                                              'sym', adj_layout)
        self.generator_adj = self.encoder_adj if norm == 'sym' else BipartiteAdjacency(
            edge_index, graph.num_users, graph.num_items, norm, adj_layout)
        # Generated modality graphs (Eq. 8): the training graph until the first swap.
        self.graphs = ModalityGraphs(edge_index, graph.num_users, graph.num_items,
                                     self.num_modalities, self.k, norm, adj_layout,
                                     self.generator_adj)
        self.reset_parameters()

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

    def _features(self) -> list[Tensor]:
        return [getattr(self, f'feat_{idx}') for idx in range(self.num_modalities)]

    # ------------------------------------------------------------------ full-graph forward
    def encode(self) -> MMSSLEmbeddings:
        """One full-graph forward pass (Eqs. 1-2 and 8-12)."""
        conv = self.conv
        feats = self.generator.project(self._features())                            # Eq. 1
        user_modal, item_modal = collaborative_modality_embeddings(                  # Eq. 2
            self.generator_adj, conv, feats)
        user_w, item_w = self.user_emb.weight, self.item_emb.weight
        user_views, item_views = modality_aware_views(self.graphs.adjs, conv,        # Eq. 8
                                                      user_w, item_w)
        user_h, item_h = modality_dependency(self.attention, user_views, item_views)  # Eq. 9
        user_graph, item_graph = high_order_connectivity(                            # Eq. 10
            self.encoder_adj, conv, user_w, item_w, user_h, item_h, self.modality_mix,
            self.num_layers)
        user = fuse_modalities(user_graph, user_modal, self.fusion_weight)           # Eq. 12
        item = fuse_modalities(item_graph, item_modal, self.fusion_weight)
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

        With the paper's formula and :math:`(1 - s\,\Delta g)/\tau \geq 120` (every default)
        the softmax puts exactly zero float32 mass off the training items (:math:`e^{-120}`
        underflows), so only the training entries' noise is drawn and nothing ``n_items``
        wide is formed; otherwise (or with ``dense=True``) the ``[B, n_i]`` block is computed.
        Both give the same rows up to round-off.

        Args:
            users: ``[B]`` user ids.
            user_star, item_star: final embeddings ``[B, d]`` of the users, ``[n_i, d]``.
            noise: Gumbel noise, ``[B, n_i]`` (dense) or ``[nnz]`` at the training entries
                (sparse path); drawn when ``None``.
            dense: force (``True``) or forbid (``False``) the dense path; ``None`` picks.
        """
        num = users.numel()
        row, col = self._train_entries(users)
        if self.ablation == 'wo_gt':
            deg = torch.bincount(row, minlength=num).to(user_star.dtype)
            return LowRankRows(num, self.num_items, index=torch.stack([row, col]),
                               value=deg[row].rsqrt())
        return gumbel_real_rows(row, col, user_star, item_star, self.gumbel_scale,
                                self.gumbel_temperature, self.aux_weight, self.gumbel_formula,
                                noise, dense)

    def _softmax_is_sparse(self) -> bool:
        """See :func:`~mmssl_pyg.nn.gumbel.softmax_is_sparse`."""
        return softmax_is_sparse(self.gumbel_scale, self.gumbel_temperature,
                                 self.gumbel_formula)

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

    @torch.no_grad()
    def _collect_topk(self, users: Tensor, modal_b: list[Tensor], item_modal: list[Tensor],
                      row: Tensor, col: Tensor, final: Tensor | None) -> None:
        """Queue the top-k neighbours (Eq. 3, step 4) of the batch users for the next swap.
        With ``final`` (see :class:`~mmssl_pyg.models.base.Batch`) only the users no later
        batch of the epoch redraws are searched: the others' rows would be replaced at the
        swap, so the swapped-in graphs are the same."""
        if final is not None and not bool(final.all()):
            local = final.nonzero().view(-1)
            keep = torch.isin(row, local)
            remap = torch.full((users.numel(),), -1, dtype=torch.long, device=users.device)
            remap[local] = torch.arange(local.numel(), device=users.device)
            users, row, col = users[local], remap[row[keep]], col[keep]
            modal_b = [u[local] for u in modal_b]
        if users.numel() == 0:
            return
        self.graphs.collect(users, [self.generator.topk(u.detach(), i.detach(), self.k, row, col,
                                                        self.item_block_size)
                                    for u, i in zip(modal_b, item_modal)])

    def draw_critic_columns(self) -> Tensor:
        """``critic_width`` sorted distinct item ids, from torch's default CPU generator."""
        return torch.randperm(self.num_items)[:self.critic_width].sort().values

    def _cached_forward(self, batch: Batch) -> dict:
        out = batch.cache.pop(_CACHE_KEY, None)
        return out if out is not None else self._batch_forward(batch)

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
        critic = self.critic
        z_fake = torch.cat([critic.project(r.detach()) for r in out['fake']], 0)
        z_real = critic.project(real).repeat(self.num_modalities, 1)
        d_real, d_fake = critic.head(z_real), critic.head(z_fake)
        penalty = projected_gradient_penalty(critic, z_real, z_fake,
                                             num_samples=self.gp_samples)
        loss = wasserstein_critic_loss(d_real, d_fake, penalty, self.gp_weight)
        return {'loss': loss, 'critic': (d_fake.mean() - d_real.mean()).detach(),
                'gradient_penalty': penalty.detach()}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        out = self._cached_forward(batch)
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
            contrastive = sum(cross_modal_info_nce(h[users], ub, self.cl_temperature,
                                                   self.cl_intra_view_negatives)
                              for h in emb.user_views)
        generator = zero
        if self.has_critic:
            fake = out['fake']
            if self.adv_samples is not None and self.adv_samples < users.numel():
                # the same uniformly drawn users in every modality's block
                pick = torch.randperm(users.numel())[:self.adv_samples].to(users.device)
                fake = [r.select_rows(pick) for r in fake]
            with _frozen(self.critic):
                z_fake = torch.cat([self.critic.project(r) for r in fake], 0)
                generator = wasserstein_generator_loss(self.critic.head(z_fake))
        elif self.ablation == 'rp_gae':
            generator = self._gae_loss(emb, users, *out['gae_target'])
        total = bpr + reg + self.adv_weight * generator + self.cl_weight * contrastive
        return {'loss': total, 'bpr': bpr, 'reg': reg, 'generator': generator,
                'contrastive': contrastive}

    def _gae_loss(self, emb: MMSSLEmbeddings, users: Tensor, row: Tensor,
                  col: Tensor) -> Tensor:
        """r/p-GAE: reconstruct :math:`\\mathbf{A}_B` from the relation logits (BCE)."""
        target = emb.user.new_zeros(users.numel(), self.num_items)
        target[row, col] = 1.0
        num_pos = max(int(row.numel()), 1)
        pos_weight = target.new_tensor((target.numel() - num_pos) / num_pos)
        losses = [F.binary_cross_entropy_with_logits(u[users] @ i.t(), target,
                                                     pos_weight=pos_weight)
                  for u, i in zip(emb.user_modal, emb.item_modal)]
        return torch.stack(losses).mean()

    # ------------------------------------------------------------------ generated graphs
    def on_epoch_end(self, epoch: int) -> None:
        self.update_modality_graphs()

    def gather_epoch_state(self, all_gather) -> None:
        """Data-parallel training: replace this process's pending (users, top-k neighbours)
        by every process's, so every replica swaps in the same modality graphs at
        :meth:`on_epoch_end`. A user drawn several times keeps the neighbours of its latest
        step, and within one step those of the highest rank: the batches of a step are, in
        rank order, consecutive draws of the shared sampler, so the graph is the one a single
        process training on them in that order would build."""
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

    # the store's state under the names older code and tests use
    _has_generated = property(lambda self: self.graphs.has_generated)
    _neighbours = property(lambda self: self.graphs.neighbours)
    _pending = property(lambda self: self.graphs.pending,
                        lambda self, value: setattr(self.graphs, 'pending', value))

    def get_extra_state(self) -> dict:
        return self.graphs.state()  # copies: the live tensors are updated in place

    def set_extra_state(self, state: dict) -> None:
        self.graphs.load_state(state)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_users} users, {self.num_items} items, '
                f'modalities={self.modalities}, embedding_dim={self.embedding_dim}, '
                f'num_layers={self.num_layers}, num_heads={self.num_heads}, k={self.k}, '
                f'ablation={self.ablation})')
