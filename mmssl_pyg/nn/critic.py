r"""MMSSL's relation critic (discriminator, Eq. 4) and the rows it reads.

The critic of Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
<https://arxiv.org/abs/2302.10632>`_ (WWW 2023) reads one user's row of ``num_items`` relation
values. Its first layer therefore holds :math:`n_i \cdot n_i/4` weights: the parameter count grows
as :math:`n_i^2/4` (11.3M for TikTok's 6,710 items, 10^12 for two million items).
:func:`critic_memory_estimate` checks the budget before anything is allocated. MMSSL's
``critic_columns=C`` option bounds it: the critic then reads ``C`` random item columns per
mini-batch (:meth:`LowRankRows.select_columns`) and has :math:`\approx C^2/4 + C^2/32`
parameters whatever the catalogue size.

Both kinds of rows the critic sees are structured: a generated row (Eq. 3) is a rank-:math:`d`
inner product ``u_B @ i.T`` with the training entries zeroed, then scaled; a real row (Eq. 5) is a
sparse Gumbel-softmax plus a rank-:math:`d` auxiliary relation. :class:`LowRankRows` keeps that
structure, so the first layer costs :math:`O(n_i \cdot n_i/4 \cdot d)` instead of
:math:`O(B \cdot n_i \cdot n_i/4)`; the result equals the dense computation up to round-off.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LowRankRows:
    r"""A block of ``num_rows x num_cols`` rows stored as

    .. math::
        \mathbf{X} = \operatorname{diag}(\mathbf{s})\, \mathbf{L} \mathbf{R}^{\top}
        + \mathbf{C}

    with a low-rank part (``left`` :math:`[R, r]`, ``right`` :math:`[n, r]`, optional per-row
    ``scale`` :math:`[R]`) and a residual :math:`\mathbf{C}` given sparse (``index`` ``[2, nnz]``
    (row, column) and ``value`` ``[nnz]``, duplicates summed) and/or ``dense`` :math:`[R, n]`.
    Every part is optional. Gradients flow through all parts.
    """
    num_rows: int
    num_cols: int
    left: Tensor | None = None
    right: Tensor | None = None
    scale: Tensor | None = None
    index: Tensor | None = None
    value: Tensor | None = None
    dense: Tensor | None = None

    def _like(self) -> Tensor:
        for t in (self.left, self.value, self.dense, self.right):
            if t is not None:
                return t
        raise ValueError('LowRankRows has no part')

    def linear(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``self.to_dense() @ weight.T + bias`` without forming the dense rows
        (``weight``: ``[out, num_cols]``)."""
        like = self._like()
        out = None
        if self.left is not None:
            # (L R^T) W^T = L (W R)^T: n * out * r multiply-adds instead of R * n * out.
            out = self.left @ (weight @ self.right).t()
            if self.scale is not None:
                out = out * self.scale.unsqueeze(1)
        if self.value is not None and self.value.numel() > 0:
            if self.value.requires_grad:
                # gather / scatter: nnz * out work both ways (torch.sparse.mm's backward for
                # the sparse values forms a dense [R, n] gradient). Columns are gathered from
                # each row of W (contiguous reads) into [out, nnz] and scattered along dim 1:
                # no transposed copy of W (out * n values) per call
                cols = weight.index_select(1, self.index[1]) * self.value
                part = cols.new_zeros(weight.size(0), self.num_rows).index_add_(
                    1, self.index[0], cols).t()
            else:  # sparse x dense (and a sparse backward for the weight): faster here
                sp = torch.sparse_coo_tensor(self.index, self.value,
                                             (self.num_rows, self.num_cols),
                                             check_invariants=False).coalesce().to_sparse_csr()
                # in the values' dtype, outside autocast: sparse CSR kernels have no
                # bfloat16 CPU implementation
                with torch.autocast(weight.device.type, enabled=False):
                    part = torch.sparse.mm(sp, weight.t().to(self.value.dtype))
            out = part if out is None else out + part
        if self.dense is not None:
            part = self.dense @ weight.t()
            out = part if out is None else out + part
        if out is None:
            out = like.new_zeros(self.num_rows, weight.size(0))
        return out if bias is None else out + bias

    def to_dense(self) -> Tensor:
        """The rows as a dense ``[num_rows, num_cols]`` tensor (tests and small inputs)."""
        like = self._like()
        out = like.new_zeros(self.num_rows, self.num_cols)
        if self.left is not None:
            lr = self.left @ self.right.t()
            out = out + (lr if self.scale is None else lr * self.scale.unsqueeze(1))
        if self.value is not None:
            out = out.index_put((self.index[0], self.index[1]), self.value, accumulate=True)
        if self.dense is not None:
            out = out + self.dense
        return out

    def select_columns(self, cols: Tensor) -> LowRankRows:
        """The rows restricted to the columns ``cols`` (sorted, distinct ids), as a
        ``num_rows x len(cols)`` :class:`LowRankRows` in the same factored form (the right
        factor's rows and the residual's entries of those columns). Differentiable."""
        right = None if self.right is None else self.right[cols]
        index = value = None
        if self.index is not None and self.index.numel():
            pos = torch.searchsorted(cols, self.index[1]).clamp(max=max(cols.numel() - 1, 0))
            keep = cols[pos] == self.index[1]
            index = torch.stack([self.index[0][keep], pos[keep]])
            value = None if self.value is None else self.value[keep]
        dense = None if self.dense is None else self.dense[:, cols]
        return LowRankRows(self.num_rows, int(cols.numel()), self.left, right, self.scale,
                           index, value, dense)

    def select_rows(self, rows: Tensor) -> LowRankRows:
        """The rows ``rows`` (distinct local row ids, in that order) as a ``len(rows) x
        num_cols`` :class:`LowRankRows` in the same factored form. Differentiable."""
        left = None if self.left is None else self.left[rows]
        scale = None if self.scale is None else self.scale[rows]
        index = value = None
        if self.index is not None and self.index.numel():
            pos = torch.full((self.num_rows,), -1, dtype=torch.long, device=rows.device)
            pos[rows] = torch.arange(rows.numel(), device=rows.device)
            new_row = pos[self.index[0]]
            keep = new_row >= 0
            index = torch.stack([new_row[keep], self.index[1][keep]])
            value = None if self.value is None else self.value[keep]
        dense = None if self.dense is None else self.dense[rows]
        return LowRankRows(int(rows.numel()), self.num_cols, left, self.right, scale, index,
                           value, dense)

    def detach(self) -> LowRankRows:
        def d(t):
            return None if t is None else t.detach()
        return LowRankRows(self.num_rows, self.num_cols, d(self.left), d(self.right),
                           d(self.scale), d(self.index), d(self.value), d(self.dense))


def critic_hidden_sizes(num_items: int) -> tuple[int, int]:
    """Hidden widths of Eq. 4: ``(num_items // 4, num_items // 8)``, at least 1."""
    return max(1, num_items // 4), max(1, num_items // 8)


def critic_memory_estimate(num_items: int, num_rows: int) -> tuple[int, int]:
    r"""``(parameters, bytes)`` a critic step needs for ``num_rows`` rows of ``num_items``.

    Parameters: the three linear layers and the two batch norms. Bytes: 16 per parameter
    (weights, gradients and Adam's two moments, float32) plus the activations of one step:
    per row about three ``num_items``-wide tensors (the gradient penalty's input gradient and
    its backward) and a dozen tensors of each hidden width.
    """
    h1, h2 = critic_hidden_sizes(num_items)
    params = num_items * h1 + h1 + h1 * h2 + h2 + h2 + 1 + 2 * (h1 + h2)
    activations = 4 * num_rows * (3 * num_items + 12 * (h1 + h2))
    return params, 16 * params + activations


def available_memory(device: torch.device | str | None = None) -> tuple[int, str]:
    """``(bytes, description)`` of the memory a critic may use on ``device``: free CUDA memory
    (``torch.cuda.mem_get_info``), else the machine's physical memory."""
    device = torch.device(device if device is not None else 'cpu')
    if device.type == 'cuda' and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f'free memory on {device}'
    try:
        pages, size = os.sysconf('SC_PHYS_PAGES'), os.sysconf('SC_PAGE_SIZE')
        return int(pages * size), 'physical memory of this machine'
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62, 'unknown (no limit checked)'


def check_critic_memory(num_items: int, num_rows: int, max_bytes: int | None = None,
                        device: torch.device | str | None = None) -> int:
    """Raise a :class:`ValueError` (before any allocation) if a critic over ``num_items``
    columns and a step over ``num_rows`` rows does not fit; return the estimated bytes.
    (With MMSSL's ``critic_columns=C`` the critic reads ``C`` columns: pass ``C``.)"""
    params, need = critic_memory_estimate(num_items, num_rows)
    if max_bytes is not None:
        limit, what = int(max_bytes), 'max_critic_memory'
    else:
        limit, what = available_memory(device)
    if need > limit:
        raise ValueError(
            f'The MMSSL critic (Eq. 4) reads rows of n_items={num_items:,} values; its first '
            f'layer alone has n_items^2/4 weights, {params:,} parameters in all. With gradients, '
            f"Adam's two moments and the activations of {num_rows:,} rows a critic step needs "
            f'about {need / 2**30:,.2f} GiB ({need:,} bytes), more than the {limit / 2**30:,.2f} '
            f'GiB ({limit:,} bytes) available ({what}). Fix: let the critic read a random subset '
            f'of item columns per step (MMSSL critic_columns=4096, for example), train on a '
            f"smaller item catalogue (filter rare items), use the w/o-ASL ablation "
            f"(ablation='wo_asl', no critic) or "
            f"the graph auto-encoder variant (ablation='rp_gae'), or raise max_critic_memory if "
            f'more memory really is available.')
    return need


class _Gram(torch.autograd.Function):
    """``w @ w.T`` whose backward is one matrix product, ``(g + g.T) @ w``."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return w @ w.t()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        w, = ctx.saved_tensors
        return (grad + grad.t()) @ w


class RelationCritic(torch.nn.Module):
    r"""The discriminator :math:`D` of MMSSL's adversarial self-augmentation (Eq. 4):

    .. math::
        D(\mathbf{x}) = c \cdot \sigma\big(\mathbf{W}_3\,
        \mathrm{drop}_{0.5}(\mathrm{BN}(\phi(\mathbf{W}_2\,
        \mathrm{drop}_{0.31}(\mathrm{BN}(\phi(\mathbf{W}_1 \mathbf{x} + \mathbf{b}_1)))
        + \mathbf{b}_2))) + \mathbf{b}_3\big)

    with :math:`\phi` = LeakyReLU(0.2) and widths :math:`n_i \to n_i/4 \to n_i/8 \to 1`.
    The parameter count grows as :math:`n_i^2/4`; see :func:`check_critic_memory`.

    Args:
        num_items: row width :math:`n_i`.
        dropout: the two dropout rates (default ``(0.31, 0.5)``).
        negative_slope: LeakyReLU slope (default ``0.2``; the MMSSL release's
            ``LeakyReLU(True)`` is slope ``1.0``, i.e. linear).
        output_scale: :math:`c` (default ``1.0``; the release uses ``100``).

    Shapes:
        - **input:** rows :math:`(R, n_i)` (dense) or a :class:`LowRankRows`
        - **output:** :math:`(R,)`
    """

    def __init__(self, num_items: int, dropout: tuple[float, float] = (0.31, 0.5),
                 negative_slope: float = 0.2, output_scale: float = 1.0):
        super().__init__()
        self.num_items = num_items
        h1, h2 = critic_hidden_sizes(num_items)
        self.negative_slope = negative_slope
        self.output_scale = output_scale
        self.dropout = tuple(dropout)
        self.lin1 = torch.nn.Linear(num_items, h1)
        self.norm1 = torch.nn.BatchNorm1d(h1)
        self.lin2 = torch.nn.Linear(h1, h2)
        self.norm2 = torch.nn.BatchNorm1d(h2)
        self.lin3 = torch.nn.Linear(h2, 1)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.lin1, self.lin2, self.lin3):
            lin.reset_parameters()
        self.norm1.reset_parameters()
        self.norm2.reset_parameters()

    def project(self, x: Tensor | LowRankRows) -> Tensor:
        """First linear layer :math:`\\mathbf{W}_1 \\mathbf{x} + \\mathbf{b}_1`: ``[R, n_i/4]``."""
        if isinstance(x, LowRankRows):
            return x.linear(self.lin1.weight, self.lin1.bias)
        return self.lin1(x)

    def head(self, z: Tensor) -> Tensor:
        """Everything after the first linear layer: ``[R, n_i/4] -> [R]``."""
        z = F.leaky_relu(z, self.negative_slope)
        z = F.dropout(self.norm1(z), self.dropout[0], self.training)
        z = F.leaky_relu(self.lin2(z), self.negative_slope)
        z = F.dropout(self.norm2(z), self.dropout[1], self.training)
        return self.output_scale * torch.sigmoid(self.lin3(z)).squeeze(-1)

    def forward(self, x: Tensor | LowRankRows) -> Tensor:
        return self.head(self.project(x))

    def input_gradient_norm(self, grad_z: Tensor, method: str = 'auto') -> Tensor:
        r"""Row norms :math:`\lVert \mathbf{W}_1^{\top} \mathbf{g}_r \rVert_2` of the input
        gradient, given the gradient ``grad_z`` ``[R, n_i/4]`` with respect to the first
        layer's output (the input gradient is exactly :math:`\mathbf{W}_1^{\top}\mathbf{g}_r`).

        ``method='gram'`` evaluates :math:`\mathbf{g}^{\top} (\mathbf{W}_1 \mathbf{W}_1^{\top})
        \mathbf{g}` (:math:`2 h^2 n + 3 R h^2` multiply-adds with the backward, :math:`h =
        n/4`), ``'direct'`` forms :math:`\mathbf{g}\mathbf{W}_1` (:math:`3 R h n`); ``'auto'``
        picks the cheaper (``'gram'`` for TikTok's 6,710 items and 2,048 rows).
        Differentiable twice (the gradient penalty's backward).
        """
        w = self.lin1.weight
        if method == 'auto':
            h, n = w.shape
            r = grad_z.size(0)
            method = 'gram' if 2 * h * h * n + 3 * r * h * h < 3 * r * h * n else 'direct'
        if method == 'gram':
            sq = ((grad_z @ _Gram.apply(w)) * grad_z).sum(1)
            return sq.clamp(min=1e-12).sqrt()
        if method == 'direct':
            return (grad_z @ w).norm(2, dim=1)
        raise ValueError(f"method must be 'auto', 'gram' or 'direct', got {method!r}")

    def __repr__(self) -> str:
        h1, h2 = critic_hidden_sizes(self.num_items)
        return (f'{self.__class__.__name__}({self.num_items} -> {h1} -> {h2} -> 1, '
                f'dropout={self.dropout}, negative_slope={self.negative_slope}, '
                f'output_scale={self.output_scale})')


def gumbel_noise(shape, generator: torch.Generator | None = None, device=None,
                 eps: float = 1e-8) -> Tensor:
    r"""Gumbel(0, 1) samples :math:`g = -\log(-\log(u + \epsilon) + \epsilon)`,
    :math:`u \sim U(0, 1)`."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


def gumbel_transform(interactions: Tensor, noise: Tensor, scale: float = 1e-5,
                     temperature: float = 0.005, formula: str = 'paper') -> Tensor:
    r"""Gumbel-softmax projection of observed rows (first half of Eq. 5).

    ``formula='paper'``: :math:`\mathrm{softmax}((\mathbf{A} + s\,\mathbf{g})/\tau)`;
    ``'release'``: :math:`\mathrm{softmax}(\mathbf{A} + (s/\tau)\,\mathbf{g})` (the latest
    released code; nearly uniform rows).
    """
    if formula == 'paper':
        logits = (interactions + scale * noise) / temperature
    elif formula == 'release':
        logits = interactions + (scale / temperature) * noise
    else:
        raise ValueError(f"formula must be 'paper' or 'release', got {formula!r}")
    return torch.softmax(logits, dim=-1)
