"""MMSSL's modality-aware collaborative relation generator (Eqs. 1-3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.graph import csr_rowptr
from .lowrank import LowRankRows
from .topk import blockwise_topk


def _accumulate_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == 'mps' else torch.float64


def row_scale(user_x: Tensor, item_x: Tensor, exclude_row: Tensor, exclude_score: Tensor,
              eps: float = 1e-12) -> Tensor:
    r"""``1 / max(||row_r||, eps)`` of the rows of ``user_x @ item_x.T`` whose entries
    ``exclude_score`` (at local rows ``exclude_row``) are set to zero, without forming the rows:
    :math:`\lVert\mathbf{u}_r\mathbf{I}^{\top}\rVert^2 = \mathbf{u}_r^{\top}
    (\mathbf{I}^{\top}\mathbf{I})\mathbf{u}_r` (float64 accumulation). Differentiable."""
    acc = _accumulate_dtype(user_x.device)
    u, i = user_x.to(acc), item_x.to(acc)
    sq = ((u @ (i.t() @ i)) * u).sum(1)
    sq = sq.index_add(0, exclude_row, -exclude_score.to(acc).pow(2))
    # clamp before the square root: a zero row gets a zero (not NaN) gradient
    return sq.clamp(min=eps * eps).rsqrt().to(user_x.dtype)


class ModalityRelationGenerator(torch.nn.Module):
    r"""Relation generator of Wei et al., `"Multi-Modal Self-Supervised Learning for
    Recommendation" <https://arxiv.org/abs/2302.10632>`_ (WWW 2023).

    Per modality :math:`m`, raw item features are projected (Eq. 2's input)

    .. math::
        \mathbf{F}^m = \mathrm{Dropout}_p(\mathbf{X}^m \mathbf{W}^m + \mathbf{b}^m),

    then propagated on the training graph into :math:`\mathbf{u}^m`, :math:`\mathbf{i}^m`
    (Eq. 2; the propagation is the model's, with
    :class:`~mmssl_pyg.nn.conv.BipartiteConv`). For a mini-batch of users :math:`B` the
    relation rows (Eq. 3) are

    .. math::
        \mathbf{S}^m_B = \mathrm{rownorm}_{L_2}\big(\langle \mathbf{u}^m_B, \mathbf{i}^m
        \rangle \odot (1 - \mathbf{A}_B)\big),

    training entries zeroed; they are returned as :class:`~mmssl_pyg.nn.lowrank.LowRankRows`
    (rank :math:`d` plus a sparse correction), never as a dense matrix. :meth:`topk` returns
    each user's :math:`k` strongest non-training items (the modality-aware neighbours of
    Eq. 8), scoring the batch against blocks of items.

    Args:
        in_channels: raw feature width of every modality.
        out_channels: embedding size :math:`d`.
        dropout: :math:`p` (default ``0.2``).

    Shapes:
        - **project:** list of :math:`(n_i, d_m)` -> list of :math:`(n_i, d)`
        - **relation_rows:** :math:`(B, d)`, :math:`(n_i, d)` -> ``LowRankRows`` :math:`(B, n_i)`
        - **topk:** :math:`(B, d)`, :math:`(n_i, d)` -> :math:`(B, k)` item ids (``-1`` where a
          user has fewer than :math:`k` candidates)
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, dropout: float = 0.2):
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.dropout = dropout
        self.lins = torch.nn.ModuleList(
            [torch.nn.Linear(c, out_channels) for c in self.in_channels])
        self.reset_parameters()

    def reset_parameters(self):
        for lin in self.lins:
            torch.nn.init.xavier_uniform_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    def project(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """Feature projection :math:`\\mathbf{F}^m` for every modality."""
        if len(xs) != len(self.lins):
            raise ValueError(f'expected {len(self.lins)} modalities, got {len(xs)}')
        return [F.dropout(lin(x), self.dropout, self.training) for lin, x in zip(self.lins, xs)]

    @staticmethod
    def relation_rows(user_x: Tensor, item_x: Tensor, exclude_row: Tensor,
                      exclude_col: Tensor, eps: float = 1e-12) -> LowRankRows:
        r"""Eq. 3 for one batch: ``rownorm(user_x @ item_x.T`` with ``(exclude_row,
        exclude_col)`` (local row, item; no duplicates) set to 0``)``.

        Nothing ``num_items`` wide is formed: the squared row norms are
        :math:`\mathbf{u}_r^{\top}(\mathbf{I}^{\top}\mathbf{I})\mathbf{u}_r` minus the
        squared training entries, accumulated in float64 so the subtraction is exact to
        float32 precision.
        """
        num_rows, num_cols = user_x.size(0), item_x.size(0)
        train_score = (user_x[exclude_row] * item_x[exclude_col]).sum(-1)
        scale = row_scale(user_x, item_x, exclude_row, train_score, eps)
        return LowRankRows(num_rows, num_cols, left=user_x, right=item_x, scale=scale,
                           index=torch.stack([exclude_row, exclude_col]),
                           value=-train_score * scale[exclude_row])

    @staticmethod
    @torch.no_grad()
    def topk(user_x: Tensor, item_x: Tensor, k: int, exclude_row: Tensor, exclude_col: Tensor,
             item_block_size: int = 4096) -> Tensor:
        """Top-``k`` non-training items per row of ``user_x`` by relation score (the row
        normalisation does not change the order), computed over blocks of
        ``item_block_size`` items with :func:`~mmssl_pyg.nn.topk.blockwise_topk` so at most
        ``B x item_block_size`` scores exist at once. ``(exclude_row, exclude_col)`` are (local
        row, item) pairs; ``-1`` marks missing neighbours (fewer than ``k`` candidates)."""
        num_rows, num_cols = user_x.size(0), item_x.size(0)
        k = min(k, num_cols)
        local = torch.arange(num_rows, device=user_x.device)
        vals, idxs = [], []
        for start in range(0, num_cols, item_block_size):
            end = min(start + item_block_size, num_cols)
            sel = (exclude_col >= start) & (exclude_col < end)
            rowptr = csr_rowptr(exclude_row[sel], num_rows)
            # exclude_row is sorted (CSR order), so the selected columns stay grouped by row
            val, idx = blockwise_topk(user_x, item_x[start:end], min(k, end - start),
                                      block_size=num_rows, exclude_rowptr=rowptr,
                                      exclude_col=exclude_col[sel] - start, query_ids=local)
            vals.append(val)
            idxs.append(idx + start)
        val, idx = torch.cat(vals, 1), torch.cat(idxs, 1)
        if len(vals) > 1:
            val, pos = val.topk(k, dim=1)
            idx = idx.gather(1, pos)
        return idx.masked_fill(torch.isneginf(val), -1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, {self.out_channels}, '
                f'dropout={self.dropout})')
