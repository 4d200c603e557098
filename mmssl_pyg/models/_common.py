"""Helpers shared by the baseline models: feature buffers, kNN item graphs, edge sampling
and InfoNCE (LightGCN propagation is :func:`mmssl_pyg.nn.propagation.light_propagate`).

Nothing here builds a dense ``users x items`` or ``items x items`` tensor: kNN graphs come from
:func:`mmssl_pyg.nn.topk.blockwise_topk` and every adjacency is sparse.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import bipartite_adjacency
from ..nn.features import scale_features
from ..nn.losses import cross_modal_info_nce
from ..nn.topk import blockwise_topk
from . import _graph_cache

# --------------------------------------------------------------------------- item features

def register_features(module: torch.nn.Module, features: dict[str, Tensor],
                      mode: str) -> list[str]:
    """Register each modality's features, scaled by
    :func:`~mmssl_pyg.nn.features.scale_features` (``mode``, the model's feature-scaling
    option), as a non-persistent buffer
    ``feat_<j>`` (they come from the dataset, not from checkpoints); return the modality
    names."""
    names = list(features)
    for j, name in enumerate(names):
        module.register_buffer(f'feat_{j}', scale_features(features[name], mode),
                               persistent=False)
    return names


def modality_features(module: torch.nn.Module) -> list[Tensor]:
    """The buffers registered by :func:`register_features`, in modality order."""
    return [getattr(module, f'feat_{j}') for j in range(len(module.modality_names))]


# --------------------------------------------------------------------------- kNN item graphs

def knn_graph(x: Tensor, k: int, include_self: bool = True, block_size: int = 1024,
              cache: bool = True, cache_dir: str | os.PathLike | None = None,
              ) -> tuple[Tensor, Tensor]:
    """Exact ``k``-nearest-neighbour item graph by cosine similarity, built blockwise.

    Args:
        x: ``[N, d]`` item features.
        k: neighbours per item (clipped to ``N``).
        include_self: count the item itself among its neighbours, as LATTICE and FREEDOM do
            (their ``topk`` runs over the full similarity row, whose maximum is the item).
        cache: reuse a graph built earlier from the same features (see
            :mod:`mmssl_pyg.models._graph_cache`).

    Returns:
        ``(edge_index [2, N*k], sim [N*k])``: row ``i`` then its neighbour ``j``, and their
        cosine similarity.
    """
    k = min(k, x.size(0) - (0 if include_self else 1))

    def build() -> dict[str, Tensor]:
        xn = F.normalize(x.detach().float(), dim=1)
        sim, idx = blockwise_topk(xn, xn, k, block_size, exclude_self=not include_self)
        row = torch.arange(x.size(0), device=x.device).repeat_interleave(idx.size(1))
        return {'edge_index': torch.stack([row, idx.reshape(-1)]), 'sim': sim.reshape(-1)}

    kind = 'cosine-knn' + ('+self' if include_self else '')
    graph = _graph_cache.cached_graph(x, k, kind, build, cache_dir) if cache else build()
    return graph['edge_index'], graph['sim']


def knn_normalize(edge_index: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    r"""Weights of :math:`D^{-1/2} A D^{-1/2}` for a (not necessarily symmetric) item graph
    ``A[row, col] = weight`` with :math:`D` its row sums (LATTICE's normalised Laplacian)."""
    row, col = edge_index
    deg = torch.zeros(num_nodes, device=weight.device, dtype=weight.dtype).index_add(0, row,
                                                                                    weight)
    d_inv_sqrt = deg.clamp(min=1e-12).rsqrt()
    return weight * d_inv_sqrt[row] * d_inv_sqrt[col]


def item_adjacency(edge_index: Tensor, weight: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """Sparse CSR ``(adj, adj_rev)`` with ``adj[row, col] = weight`` (duplicates summed), ready
    for :class:`~mmssl_pyg.nn.BipartiteConv` (``conv(h, adj, adj_rev=adj_rev)`` gives
    ``h'_row = sum_col adj[row, col] h_col``)."""
    return bipartite_adjacency(edge_index, num_items, num_items, edge_weight=weight.detach(),
                               norm='none')


# --------------------------------------------------------------------------- edge sampling

def edge_dropout(edge_index: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Keep ``int(E * (1 - p))`` edges drawn uniformly without replacement (SGL's ED view;
    ``p`` in ``[0, 1)``, checked where SGL declares it)."""
    num_edges = edge_index.size(1)
    keep = int(num_edges * (1.0 - p))
    perm = torch.randperm(num_edges, generator=generator, device='cpu')[:keep]
    return edge_index[:, perm.sort().values.to(edge_index.device)]


def degree_sensitive_prune(edge_index: Tensor, num_users: int, num_items: int, p: float,
                           generator: torch.Generator | None = None) -> Tensor:
    r"""FREEDOM's degree-sensitive edge pruning: keep ``int(E * (1 - p))`` user-item edges
    sampled without replacement with probability proportional to
    :math:`1 / \sqrt{|N_u| |N_i|}`, so edges between high-degree nodes are dropped more often.

    Sampling uses the Gumbel top-k trick, which draws exactly the same distribution as
    sequential multinomial sampling without replacement and has no category limit. ``p`` is in
    ``[0, 1)`` (checked where FREEDOM declares it).
    """
    u, i = edge_index
    num_edges = u.numel()
    keep = int(num_edges * (1.0 - p))
    ones = torch.ones(num_edges, device=u.device)
    deg_u = torch.zeros(num_users, device=u.device).index_add_(0, u, ones)
    deg_i = torch.zeros(num_items, device=u.device).index_add_(0, i, ones)
    log_w = -0.5 * (deg_u[u].log() + deg_i[i].log())
    uniform = torch.rand(num_edges, generator=generator, device='cpu').to(u.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1.0 - 1e-7)))
    kept = torch.topk(log_w + gumbel, keep).indices.sort().values
    return edge_index[:, kept]


# --------------------------------------------------------------------------- losses

def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """InfoNCE between two views of the same rows; the other rows of ``b`` are negatives
    (the same loss as MMSSL's Eq. 11, :func:`~mmssl_pyg.nn.losses.cross_modal_info_nce`)."""
    return cross_modal_info_nce(a, b, temperature)


def xavier_normal_linear(in_dim: int, out_dim: int, bias: bool = True) -> torch.nn.Linear:
    """``Linear`` with Xavier-normal weights and zero bias (the MMRec models' initialisation)."""
    lin = torch.nn.Linear(in_dim, out_dim, bias=bias)
    torch.nn.init.xavier_normal_(lin.weight)
    if bias:
        torch.nn.init.zeros_(lin.bias)
    return lin
