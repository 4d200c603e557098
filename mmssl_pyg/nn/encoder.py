r"""The full-graph equations of MMSSL's encoder, one function each (Wei et al.,
`"Multi-Modal Self-Supervised Learning for Recommendation"
<https://arxiv.org/abs/2302.10632>`_, WWW 2023): Eqs. 2, 8, 9, 10 and 12.

Eq. 1 is :meth:`~mmssl_pyg.nn.generator.ModalityRelationGenerator.project`, Eq. 3
:meth:`~mmssl_pyg.nn.generator.ModalityRelationGenerator.relation_rows`, Eq. 9's attention
:class:`~mmssl_pyg.nn.attention.CrossModalAttention`; see ``docs/EQUATIONS.md``.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.options import Choice
from .adjacency import BipartiteAdjacency
from .attention import CrossModalAttention
from .conv import BipartiteConv
from .edge_weighted import unit_rows
from .propagation import light_propagate


class MMSSLEmbeddings(NamedTuple):
    """Everything one full-graph forward pass of :class:`~mmssl_pyg.models.MMSSL` computes."""
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


def collaborative_modality_embeddings(adj: BipartiteAdjacency, conv: BipartiteConv,
                                      features: Sequence[Tensor]
                                      ) -> tuple[list[Tensor], list[Tensor]]:
    r"""Eq. 2: :math:`\mathbf{u}^m = \hat{\mathbf{A}}\mathbf{F}^m`,
    :math:`\mathbf{i}^m = \hat{\mathbf{A}}^{\top}\mathbf{u}^m` for every modality's projected
    features :math:`\mathbf{F}^m` ``[n_i, d]``; returns ``(user_modal, item_modal)``.

    Every modality propagates on the same graph, so the modalities go through each product
    together, side by side as columns (one sparse product per direction instead of one per
    modality; each column's sums are the same)."""
    widths = [f.size(1) for f in features]
    user = adj.to_users(conv, torch.cat(list(features), 1))
    item = adj.to_items(conv, user)
    return list(user.split(widths, 1)), list(item.split(widths, 1))


#: MMSSL's ``cold_items`` option: the ``mode`` of :func:`cold_item_modal`.
ColdItems = Annotated[str, Choice('none', 'features')]


def cold_item_modal(item_modal: Sequence[Tensor], features: Sequence[Tensor], cold: Tensor,
                    mode: str) -> list[Tensor]:
    r"""Eq. 2 for items without training interactions (this library's option).

    :math:`\mathbf{i}^m = \hat{\mathbf{A}}^{\top}\mathbf{u}^m` is zero for an item no training
    user touched (a *cold* item), so the paper's model can neither generate it as a neighbour
    (Eq. 3 scores it 0) nor give it content in Eq. 12. ``mode='none'`` (the paper) returns
    ``item_modal`` unchanged. ``mode='features'`` gives each cold item ``cold`` its own projected
    features :math:`\mathbf{F}^m_i`, scaled to unit length times the mean row length of the
    other items' :math:`\mathbf{i}^m` (detached), so its relation scores are on the warm
    items' scale. With no cold items the input is returned unchanged.
    """
    if mode == 'none' or cold.numel() == 0:
        return list(item_modal)
    out = []
    num_warm = max(item_modal[0].size(0) - cold.numel(), 1)
    for item_m, feat in zip(item_modal, features):
        norms = item_m.detach().norm(dim=1)
        # mean over the warm rows (no host sync); 0 (no content) if every item is cold
        length = (norms.sum() - norms[cold].sum()) / num_warm
        out.append(item_m.index_copy(0, cold, F.normalize(feat[cold], dim=1) * length))
    return out


def modality_aware_views(adjs: Sequence[BipartiteAdjacency], conv: BipartiteConv,
                         user_x: Tensor, item_x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    r"""Eq. 8: :math:`\mathbf{H}^m_u = \sum_{i \in \hat{\mathcal{G}}^m(u)} \hat{c}_{ui}
    \mathbf{E}_I[i]`, :math:`\mathbf{H}^m_i = \sum_{u \in \hat{\mathcal{G}}^m(i)} \hat{c}_{ui}
    \mathbf{E}_U[u]` over each modality graph in ``adjs``; returns ``(user_views,
    item_views)``. Modalities that share one graph object share its aggregation."""
    views: dict[int, tuple[Tensor, Tensor]] = {}
    for adj in adjs:
        if id(adj) not in views:
            views[id(adj)] = (adj.to_users(conv, item_x), adj.to_items(conv, user_x))
    return [views[id(adj)][0] for adj in adjs], [views[id(adj)][1] for adj in adjs]


def modality_tokens(user_views: Sequence[Tensor], item_views: Sequence[Tensor]) -> Tensor:
    """The ``[n_u + n_i, M, d]`` token sequences Eq. 9 attends over (users first)."""
    return torch.cat([torch.stack(list(user_views), 1), torch.stack(list(item_views), 1)], 0)


def modality_dependency(attention: CrossModalAttention, user_views: Sequence[Tensor],
                        item_views: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    r"""Eq. 9: multi-head self-attention across each node's :math:`M` views, then the mean
    over modalities: ``(h_u [n_u, d], h_i [n_i, d])``."""
    fused = attention.pooled(modality_tokens(user_views, item_views))
    num_users = user_views[0].size(0)
    return fused[:num_users], fused[num_users:]


#: MMSSL's ``mix_scale`` / ``fusion_scale`` options: the ``scale`` of :func:`content_scale`.
ContentScale = Annotated[str, Choice('unit', 'relative')]


def content_scale(reference: Tensor, scale: str) -> Tensor | float:
    r"""The length given to each unit-norm content term of Eqs. 10 and 12.

    ``'unit'`` (the paper): ``1``, whatever the collaborative embeddings' size.
    ``'relative'`` (this library's option): the mean row L2 norm of ``reference`` (the
    collaborative table the term is added to), detached, so :math:`\mu` and :math:`\omega`
    become fractions of the collaborative embeddings' typical length instead of absolute
    lengths (at Xavier initialisation a unit-norm term is about 10x longer than an ID row).
    """
    if scale == 'unit':
        return 1.0
    return reference.detach().norm(dim=1).mean()  # 'relative


def high_order_connectivity(adj: BipartiteAdjacency, conv: BipartiteConv, user_x: Tensor,
                            item_x: Tensor, user_h: Tensor, item_h: Tensor, mix: float,
                            num_layers: int, scale: str = 'unit') -> tuple[Tensor, Tensor]:
    r"""Eq. 10: :math:`\mathbf{E}^{(0)} = \mathbf{E} + \mu\,s\,\mathrm{normalize}(\mathbf{h})`,
    :math:`\mathbf{E}^{(l+1)} = \hat{\mathbf{A}}\mathbf{E}^{(l)}` for :math:`L` layers on
    ``adj`` (:func:`~mmssl_pyg.nn.propagation.light_propagate`),
    :math:`\bar{\mathbf{E}}` the mean over layers; returns ``(E_bar_u, E_bar_i)``.
    :math:`s` is :func:`content_scale` of the ID table (``1`` in the paper)."""
    su, si = content_scale(user_x, scale), content_scale(item_x, scale)
    return light_propagate(user_x + mix * su * unit_rows(user_h),
                           item_x + mix * si * unit_rows(item_h), num_layers,
                           partial(adj.to_users, conv), partial(adj.to_items, conv))


def fuse_modalities(graph_x: Tensor, modal: Sequence[Tensor], weight: float,
                    scale: str = 'unit') -> Tensor:
    r"""Eq. 12: :math:`\mathbf{e}^* = \bar{\mathbf{E}} + \omega\,s \sum_m
    \mathrm{normalize}(\mathbf{u}^m)` (items alike), :math:`s` the :func:`content_scale` of
    :math:`\bar{\mathbf{E}}` (``1`` in the paper)."""
    s = content_scale(graph_x, scale)
    return graph_x + weight * s * sum(unit_rows(x) for x in modal)
