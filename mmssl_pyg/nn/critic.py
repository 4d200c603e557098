r"""MMSSL's relation critic (discriminator, Eq. 4) and the rows it reads.

The critic of Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
<https://arxiv.org/abs/2302.10632>`_ (WWW 2023) reads one user's row of ``num_items`` relation
values. Its first layer therefore holds :math:`n_i \cdot n_i/4` weights: the parameter count grows
as :math:`n_i^2/4` (11.3M for TikTok's 6,710 items, 10^12 for two million items).
:func:`~mmssl_pyg.nn.critic_memory.critic_memory_estimate` checks the budget before anything
is allocated. MMSSL's ``critic_columns=C`` option bounds it: the critic then reads ``C``
random item columns per mini-batch (:meth:`LowRankRows.select_columns`) and has
:math:`\approx C^2/4 + C^2/32` parameters whatever the catalogue size.

The rows arrive in factored form (:class:`~mmssl_pyg.nn.lowrank.LowRankRows`, so the first
layer never sees a dense ``B x n_i`` block); the memory check is in
:mod:`mmssl_pyg.nn.critic_memory` and Eq. 5's real rows in :mod:`mmssl_pyg.nn.gumbel`.

**Bounded critic** (MMSSL's ``critic_columns=C``, not in the paper): for large catalogues the
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
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from .critic_memory import critic_hidden_sizes
from .lowrank import LowRankRows, linear_blocks


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
    The parameter count grows as :math:`n_i^2/4`; see
    :func:`~mmssl_pyg.nn.critic_memory.check_critic_memory`.

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

    def project_blocks(self, blocks: list[Tensor | LowRankRows]) -> list[Tensor]:
        """:meth:`project` of each block; :class:`LowRankRows` blocks share the products with
        :math:`\\mathbf{W}_1` (:func:`~mmssl_pyg.nn.lowrank.linear_blocks`)."""
        if blocks and all(isinstance(b, LowRankRows) for b in blocks):
            return linear_blocks(blocks, self.lin1.weight, self.lin1.bias)
        return [self.project(b) for b in blocks]

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


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Run ``module`` without gradients for its parameters (inputs still get theirs)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
