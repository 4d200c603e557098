"""A normalised bipartite adjacency in the layout the message-passing layers read."""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.graph import bipartite_adjacency
from .conv import BipartiteConv

LAYOUTS = ('csr', 'coo', 'edge_index', 'sparse_tensor')


class BipartiteAdjacency(torch.nn.Module):
    """One normalised user-item graph, both directions, in one of :data:`LAYOUTS`, with the
    two aggregations a :class:`~mmssl_pyg.nn.conv.BipartiteConv` runs over it.

    Args:
        edge_index: ``[2, E]`` (user, item) edges, no duplicates.
        num_users, num_items: node counts.
        norm: ``'sym'`` or ``'row'`` (see :func:`~mmssl_pyg.data.graph.bipartite_adjacency`).
        layout: ``'csr'`` (fastest), ``'coo'``, ``'edge_index'`` or ``'sparse_tensor'``
            (needs torch-sparse).
    """

    def __init__(self, edge_index: Tensor, num_users: int, num_items: int, norm: str,
                 layout: str):
        super().__init__()
        self.num_users, self.num_items, self.layout = num_users, num_items, layout
        self.num_edges = int(edge_index.size(1))
        sparse_layout = torch.sparse_csr if layout == 'csr' else torch.sparse_coo
        ui, iu = bipartite_adjacency(edge_index, num_users, num_items, norm=norm,
                                     layout=sparse_layout)
        if layout in ('csr', 'coo'):
            self.register_buffer('ui', ui, persistent=False)
            self.register_buffer('iu', iu, persistent=False)
            if norm == 'sym':  # both directions carry the same weights: each is the other's .T
                self.ui_t, self.iu_t = None, None
            else:  # the cached transposes give BipartiteConv its fast backward
                self.register_buffer('ui_t', sparse_transpose(ui), persistent=False)
                self.register_buffer('iu_t', sparse_transpose(iu), persistent=False)
        else:  # edge lists (also the storage of the SparseTensor layout)
            ui, iu = ui.coalesce(), iu.coalesce()
            self.register_buffer('ui_index', ui.indices(), persistent=False)  # (user, item)
            self.register_buffer('ui_value', ui.values(), persistent=False)
            self.register_buffer('iu_index', iu.indices(), persistent=False)  # (item, user)
            self.register_buffer('iu_value', iu.values(), persistent=False)

    def to_users(self, conv: BipartiteConv, x: Tensor) -> Tensor:
        """Aggregate item rows ``x`` ``[n_i, F]`` into users."""
        return self._aggregate(conv, x, 'ui', 'iu', (self.num_items, self.num_users))

    def to_items(self, conv: BipartiteConv, x: Tensor) -> Tensor:
        """Aggregate user rows ``x`` ``[n_u, F]`` into items."""
        return self._aggregate(conv, x, 'iu', 'ui', (self.num_users, self.num_items))

    def _aggregate(self, conv: BipartiteConv, x: Tensor, key: str, rev: str,
                   size: tuple[int, int]) -> Tensor:
        """``conv`` over the direction ``key`` (``'ui'``: into users), ``size`` = (source
        nodes, target nodes)."""
        if self.layout in ('csr', 'coo'):
            cached_t = getattr(self, f'{key}_t')
            return conv(x, getattr(self, key),
                        adj_rev=getattr(self, rev) if cached_t is None else cached_t)
        index, value = getattr(self, f'{key}_index'), getattr(self, f'{key}_value')
        if self.layout == 'edge_index':
            return conv(x, index.flip(0), edge_weight=value, size=size)
        return conv(x, _sparse_tensor(index, value, (size[1], size[0])))


def sparse_transpose(adj: Tensor) -> Tensor:
    """``adj.T`` of a ``torch.sparse`` CSR or COO matrix, in the same layout: the ``adj_rev``
    of :class:`~mmssl_pyg.nn.conv.BipartiteConv` when no other matrix is the transpose (any
    normalisation but ``'sym'``, whose two directions carry the same weights)."""
    t = adj.to_sparse_coo().t().coalesce()
    return t.to_sparse_csr() if adj.layout == torch.sparse_csr else t


def _sparse_tensor(index: Tensor, value: Tensor, size: tuple[int, int]):
    from torch_geometric.typing import SparseTensor
    return SparseTensor(row=index[0], col=index[1], value=value, sparse_sizes=size)
