"""Bipartite light graph convolution, the propagation step every model here uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, spmm

from ..utils.io import generated_modules_here


def _sparse_product(adj: Tensor, x: Tensor, *, fresh: bool = False) -> Tensor:
    """``adj @ x`` (no autograd through ``adj``'s values needed): the one sparse-dense product
    of ``BipartiteConv`` and of GRCN's :class:`~mmssl_pyg.nn.edge_weighted.EdgeWeightedGraph`.

    On the CPU a CSR ``adj`` is multiplied as one weighted embedding bag per row
    (``F.embedding_bag`` with the row pointers as offsets, the column indices as indices and
    the values as ``per_sample_weights``): the same sum of ``value * x[col]`` over each row's
    entries, in the same order, up to float round-off, and several times faster than
    ``torch.sparse.mm``'s CSR kernel here (0.17x to 0.32x as long on 1 to 2 threads for
    MMSSL's Eq. 8 graphs, 67 entries a row, 64 columns; 0.6x for GRCN's TikTok graph;
    ``docs/speed.md``). Other devices and layouts, mixed dtypes, and empty matrices or
    zero-width ``x`` (which ``embedding_bag`` refuses) keep the sparse kernels: with ``fresh``,
    a CSR product is written straight into a new tensor (``addmm_`` with ``beta=0``, which
    ignores the new memory's contents, NaN included), otherwise ``torch.sparse.mm`` (which
    fills a zero tensor and copies it into the output)."""
    if (adj.layout == torch.sparse_csr and x.device.type == 'cpu' and adj.dtype == x.dtype
            and not (adj.requires_grad and torch.is_grad_enabled()) and adj._nnz() > 0
            and x.size(1) > 0):
        return F.embedding_bag(adj.col_indices(), x, adj.crow_indices(), mode='sum',
                               per_sample_weights=adj.values(), include_last_offset=True)
    if fresh and adj.layout == torch.sparse_csr:
        return x.new_empty(adj.size(0), x.size(1)).addmm_(adj, x, beta=0)
    return torch.sparse.mm(adj, x)


class _TransposedSpMM(torch.autograd.Function):
    """``adj @ x`` whose backward uses a precomputed ``adj.T`` (CSR transposes are slow)."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_rev: Tensor, x: Tensor) -> Tensor:
        ctx.adj_rev = adj_rev
        return _sparse_product(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, _sparse_product(ctx.adj_rev, grad)


def sparse_matmul(adj: Tensor, x: Tensor, adj_rev: Tensor | None = None) -> Tensor:
    """``adj @ x`` for a ``torch.sparse`` matrix; with ``adj_rev = adj.T`` the backward pass
    reuses it instead of transposing (valid only when ``adj`` needs no gradient).

    Under mixed precision (``torch.autocast``) the product runs in ``adj``'s dtype (float32):
    sparse CSR kernels have no bfloat16 CPU implementation, and neighbour sums are better
    accumulated in float32 anyway. Outside autocast, with float32 inputs, nothing changes.
    """
    low = (torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(x.device.type) or (x.dtype in low and adj.dtype not in low):
        with torch.autocast(x.device.type, enabled=False):
            return sparse_matmul(adj, x.to(adj.dtype), adj_rev)
    if adj_rev is not None and not adj.requires_grad and torch.is_grad_enabled() \
            and x.requires_grad:
        return _TransposedSpMM.apply(adj, adj_rev, x)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _sparse_product(adj, x)
    return torch.sparse.mm(adj, x)


class BipartiteConv(MessagePassing):
    r"""Light graph convolution from source to destination nodes of a bipartite graph
    (He et al., "LightGCN", SIGIR 2020), with the normalisation already in the edge weights:

    .. math::
        \mathbf{x}^{\prime}_j = \sum_{i \in \mathcal{N}(j)} w_{ij}\, \mathbf{x}_i

    It is the propagation of MMSSL's Eq. 2 (features to users and items), Eq. 8 (ID
    embeddings over the generated modality graphs) and Eq. 10 (the LightGCN encoder).
    Normalised weights come from :func:`mmssl_pyg.data.graph.bipartite_adjacency`.

    The connectivity may be given as

    * ``edge_index`` ``[2, E]`` (source, destination) with optional ``edge_weight``;
    * a ``torch.sparse`` (CSR or COO) matrix of shape ``[N_dst, N_src]`` (PyG's ``adj_t``
      convention), optionally with ``adj_rev`` = its transpose to speed up the backward pass;
    * a torch-sparse ``SparseTensor`` ``adj_t`` when that package is installed.

    All give the same output.

    Shapes:
        - **input:** source features :math:`(N_{src}, F)`, connectivity as above,
          ``size=(N_src, N_dst)`` for ``edge_index`` input.
        - **output:** destination features :math:`(N_{dst}, F)`
    """

    def __init__(self, **kwargs):
        kwargs.setdefault('aggr', 'add')
        # PyG renders propagate into a module file it never deletes: into this process's own
        # folder, removed at exit (or by the next process after a kill -9)
        with generated_modules_here():
            super().__init__(**kwargs)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
                size: tuple[int, int] | None = None, adj_rev: Tensor | None = None) -> Tensor:
        if is_torch_sparse_tensor(edge_index):
            # Direct dispatch: identical to MessagePassing's fused path, plus the cached
            # transpose for the backward pass.
            if edge_index.size(1) != x.size(0):
                raise ValueError(f'adjacency has {edge_index.size(1)} source columns but x has '
                                 f'{x.size(0)} rows')
            return sparse_matmul(edge_index, x, adj_rev)
        if isinstance(edge_index, Tensor) and size is None:
            raise ValueError('BipartiteConv needs size=(num_src, num_dst) with edge_index input')
        return self.propagate(edge_index, x=(x, None), edge_weight=edge_weight, size=size)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: tuple[Tensor, Tensor | None]) -> Tensor:
        src = x[0] if isinstance(x, tuple) else x
        return spmm(adj_t, src, reduce=self.aggr)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'


def is_sparse_tensor_available() -> bool:
    """Whether torch-sparse's ``SparseTensor`` can be built (the optional ``sparse`` extra)."""
    from torch_geometric import typing as pyg_typing
    return bool(pyg_typing.WITH_TORCH_SPARSE) and SparseTensor is not None
