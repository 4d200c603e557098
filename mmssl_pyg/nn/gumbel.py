r"""Gumbel-based transformation of the observed rows: MMSSL's real rows (Eq. 5).

.. math::
    \bar{\mathbf{A}}_B = \mathrm{rownorm}_{L_2}\big(\mathrm{softmax}((\mathbf{A}_B + s\,
    \mathbf{g})/\tau) + \lambda\,\hat{\mathbf{S}}_B\big), \qquad
    \mathbf{g} = -\log(-\log(\mathbf{u} + \epsilon) + \epsilon),\ \mathbf{u} \sim U(0, 1)

(Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
<https://arxiv.org/abs/2302.10632>`_, WWW 2023), with :math:`\hat{\mathbf{S}}_B` the relation
of the final embeddings, training entries zeroed. :func:`gumbel_real_rows` is the one
implementation the model runs; :func:`gumbel_transform` is the dense softmax it falls back on
when the softmax is not sparse (and the reference the tests compare with).
"""
from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from ..utils.options import Choice
from .generator import row_scale
from .lowrank import LowRankRows

#: MMSSL's ``gumbel_formula`` option: the ``formula`` of :func:`gumbel_transform`.
GumbelFormula = Annotated[str, Choice('paper', 'release')]
#: the largest gap between two Gumbel samples of :func:`gumbel_noise` (eps = 1e-8)
GUMBEL_RANGE = 21.4


def gumbel_noise(shape, generator: torch.Generator | None = None, device=None,
                 eps: float = 1e-8) -> Tensor:
    r"""Gumbel(0, 1) samples :math:`g = -\log(-\log(u + \epsilon) + \epsilon)`,
    :math:`u \sim U(0, 1)` (the noise of Eq. 5)."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


def gumbel_transform(interactions: Tensor, noise: Tensor, scale: float = 1e-5,
                     temperature: float = 0.005, formula: str = 'paper') -> Tensor:
    r"""Dense Gumbel-softmax projection of observed rows (first half of Eq. 5).

    ``formula='paper'``: :math:`\mathrm{softmax}((\mathbf{A} + s\,\mathbf{g})/\tau)`;
    ``'release'``: :math:`\mathrm{softmax}(\mathbf{A} + (s/\tau)\,\mathbf{g})` (the latest
    released code; nearly uniform rows).
    """
    if formula == 'paper':
        logits = (interactions + scale * noise) / temperature
    else:  # 'release'
        logits = interactions + (scale / temperature) * noise
    return torch.softmax(logits, dim=-1)


def softmax_is_sparse(scale: float, temperature: float, formula: str = 'paper') -> bool:
    r"""Whether Eq. 5's softmax is exactly zero (float32) off the observed entries: the logit
    gap :math:`(1 - s\,\Delta g)/\tau`, with :math:`\Delta g \leq 21.4` for
    :func:`gumbel_noise`, is at least 120 (:math:`e^{-120}` underflows)."""
    if formula != 'paper':
        return False
    return (1.0 - abs(scale) * GUMBEL_RANGE) / temperature >= 120.0


def normalised_rows(row: Tensor, col: Tensor, num_rows: int, num_cols: int,
                    dtype: torch.dtype = torch.float32) -> LowRankRows:
    r"""The L2-row-normalised observed rows :math:`\mathbf{A}_B` (entries ``(row, col)``, no
    duplicates): the real rows of the w/o-GT ablation (Eq. 5 without the transformation)."""
    deg = torch.bincount(row, minlength=num_rows).to(dtype)
    return LowRankRows(num_rows, num_cols, index=torch.stack([row, col]),
                       value=deg[row].rsqrt())


@torch.no_grad()
def gumbel_real_rows(row: Tensor, col: Tensor, user_star: Tensor, item_star: Tensor,
                     scale: float = 1e-5, temperature: float = 0.005,
                     aux_weight: float = 100.0, formula: str = 'paper',
                     noise: Tensor | None = None, dense: bool | None = None) -> LowRankRows:
    r"""Eq. 5 for one batch: :math:`\bar{\mathbf{A}}_B` in factored form.

    :math:`\hat{\mathbf{S}}_B = \mathrm{rownorm}(\mathbf{e}^*_B {\mathbf{e}^*}^{\top})` with the
    observed entries zeroed (Eq. 3 on the final embeddings) is kept as a low-rank part. When
    :func:`softmax_is_sparse` holds (every default) and every row has an observed entry, the
    softmax lives on the observed entries, so only their noise is drawn and nothing
    ``n_items`` wide is formed; otherwise (or with ``dense=True``) the ``[B, n_i]`` softmax of
    :func:`gumbel_transform` is computed. Both give the same rows up to round-off.

    Args:
        row, col: (local row, item) of the observed entries of :math:`\mathbf{A}_B`, no
            duplicates, rows sorted.
        user_star, item_star: final embeddings ``[B, d]`` of the batch users, ``[n_i, d]``.
        scale, temperature, formula: :math:`s`, :math:`\tau` and the softmax formula (see
            :func:`gumbel_transform`).
        aux_weight: :math:`\lambda`.
        noise: Gumbel noise, ``[B, n_i]`` or ``[nnz]`` at the observed entries (sparse path
            only); drawn when ``None``.
        dense: force (``True``) or forbid (``False``) the dense path; ``None`` picks.
    """
    num, num_items = user_star.size(0), item_star.size(0)
    p_train = (user_star[row] * item_star[col]).sum(-1)
    p_scale = row_scale(user_star, item_star, row, p_train)  # 1 / ||S_hat row, zeroed||
    aux_scale = aux_weight * p_scale
    if dense is None:
        has_train = torch.bincount(row, minlength=num) > 0
        dense = not (softmax_is_sparse(scale, temperature, formula) and bool(has_train.all()))
    if not dense:
        g = noise[row, col] if noise is not None and noise.dim() == 2 else noise
        if g is None:
            g = gumbel_noise(row.shape, device=row.device)
        logit = (1.0 + scale * g) / temperature
        top = logit.new_full((num,), float('-inf')).scatter_reduce(
            0, row, logit, reduce='amax', include_self=True)
        soft = (logit - top[row]).exp()
        soft = soft / soft.new_zeros(num).index_add(0, row, soft)[row]
        # soft lives on the observed entries, where the zeroed S_hat is 0: the norms add up
        p_norm_sq = (1.0 / p_scale).pow(2) * (p_scale < 1e12)
        sq = soft.new_zeros(num).index_add(0, row, soft.pow(2)) + aux_scale.pow(2) * p_norm_sq
        c = sq.clamp(min=1e-24).rsqrt()
        lr_scale = c * aux_scale
        value = c[row] * soft - lr_scale[row] * p_train
        return LowRankRows(num, num_items, left=user_star, right=item_star,
                           scale=lr_scale, index=torch.stack([row, col]), value=value)
    a = user_star.new_zeros(num, num_items)
    a[row, col] = 1.0
    if noise is None:
        noise = gumbel_noise(a.shape, device=a.device)
    soft = gumbel_transform(a, noise, scale, temperature, formula)
    p = user_star @ item_star.t()
    p[row, col] = 0.0
    c = (soft + aux_scale.unsqueeze(1) * p).norm(dim=1).clamp(min=1e-12).reciprocal()
    # rows = c*soft + (c*aux_scale) * (e*_B e*^T) - (c*aux_scale) * p on observed entries
    lr_scale = c * aux_scale
    resid = soft * c.unsqueeze(1)
    resid[row, col] -= lr_scale[row] * p_train
    nz = resid.nonzero()
    if nz.size(0) <= 0.05 * resid.numel():
        index = nz.t()
        return LowRankRows(num, num_items, left=user_star, right=item_star,
                           scale=lr_scale, index=index, value=resid[index[0], index[1]])
    return LowRankRows(num, num_items, left=user_star, right=item_star,
                       scale=lr_scale, dense=resid)
