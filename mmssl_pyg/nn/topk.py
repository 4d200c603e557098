"""Blockwise top-k over inner products: never materialises a full ``rows x columns`` matrix."""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def blockwise_topk(query: Tensor, keys: Tensor, k: int, block_size: int = 1024,
                   exclude_rowptr: Tensor | None = None, exclude_col: Tensor | None = None,
                   query_ids: Tensor | None = None, exclude_self: bool = False,
                   ) -> tuple[Tensor, Tensor]:
    """Top-``k`` columns of ``query @ keys.T`` per query row, computed ``block_size`` rows at
    a time so peak memory is ``block_size x num_keys`` floats.

    Args:
        query: ``[Q, d]``; keys: ``[K, d]``.
        exclude_rowptr, exclude_col: optional CSR of columns to exclude per *global* query id
            (e.g. each user's training items); rows are looked up through ``query_ids``
            (defaults to ``arange(Q)``).
        exclude_self: exclude column ``query_ids[r]`` from row ``r`` (item-item kNN).

    Returns:
        ``(values [Q, k], indices [Q, k])``.
    """
    num_q, num_k = query.size(0), keys.size(0)
    k = min(k, num_k)
    if query_ids is None:
        query_ids = torch.arange(num_q, device=query.device)
    vals, idxs = [], []
    for start in range(0, num_q, block_size):
        q = query[start:start + block_size]
        ids = query_ids[start:start + block_size]
        s = q @ keys.t()
        if exclude_rowptr is not None:
            r, c = _csr_gather(exclude_rowptr, exclude_col, ids)
            s[r, c] = float('-inf')
        if exclude_self:
            s[torch.arange(ids.numel(), device=s.device), ids] = float('-inf')
        v, i = s.topk(k, dim=1)
        vals.append(v)
        idxs.append(i)
    if not vals:
        empty = query.new_zeros(0, k)
        return empty, empty.long()
    return torch.cat(vals), torch.cat(idxs)


def _csr_gather(rowptr: Tensor, col: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Local row numbers and columns of the CSR rows ``ids`` (vectorised)."""
    start, end = rowptr[ids], rowptr[ids + 1]
    counts = end - start
    local = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), counts)
    offsets = torch.arange(int(counts.sum()), device=ids.device) - \
        torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return local, col[torch.repeat_interleave(start, counts) + offsets]


def knn_edge_index(x: Tensor, k: int, block_size: int = 1024, cosine: bool = True) -> Tensor:
    """Sparse ``k``-nearest-neighbour graph of the rows of ``x`` (self excluded).

    Returns ``[2, N * k]`` (row, neighbour) pairs, built blockwise: no ``N x N`` tensor.
    """
    if cosine:
        x = torch.nn.functional.normalize(x, dim=1)
    _, idx = blockwise_topk(x, x, k, block_size, exclude_self=True)
    row = torch.arange(x.size(0), device=x.device).repeat_interleave(idx.size(1))
    return torch.stack([row, idx.reshape(-1)])
