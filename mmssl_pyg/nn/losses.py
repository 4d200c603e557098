r"""Losses of MMSSL (Wei et al., `"Multi-Modal Self-Supervised Learning for Recommendation"
<https://arxiv.org/abs/2302.10632>`_, WWW 2023): the WGAN-GP critic objective (Eqs. 6-7) and
the cross-modal InfoNCE (Eq. 11)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.options import Choice
from .critic import frozen


def cross_modal_info_nce(anchor: Tensor, target: Tensor, temperature: float = 0.5,
                         intra_view_negatives: bool = False, ids: Tensor | None = None
                         ) -> Tensor:
    r"""Cross-modal InfoNCE of Eq. 11, averaged over the rows:

    .. math::
        \mathcal{L}_{CL} = -\frac{1}{|B|} \sum_{u \in B} \log
        \frac{\exp(\cos(\mathbf{h}_u, \mathbf{e}_u)/\tau)}
             {\sum_{u' \in B} \exp(\cos(\mathbf{h}_u, \mathbf{e}_{u'})/\tau)}

    The paper writes a sum over users; the mean keeps :math:`\lambda_{cl}` independent of the
    batch size (the released code, whose :math:`\lambda_{cl} = 0.03` we use, averages too).

    Args:
        anchor: modality-aware views :math:`\mathbf{h}_u` ``[B, d]``.
        target: overall embeddings :math:`\mathbf{e}^*_u` ``[B, d]`` (row ``u`` is the positive).
        temperature: :math:`\tau_c` (default ``0.5``).
        intra_view_negatives: also put :math:`\exp(\cos(\mathbf{h}_u, \mathbf{h}_{u'})/\tau)`,
            :math:`u' \neq u`, in the denominator (GRACE-style, as the released code does).
        ids: optional node ids of the rows ``[B]``. Another row with the anchor's id (an item
            that occurs twice in a batch) is the same node, so it is left out of the
            denominator instead of being counted as a negative. ``None``: rows are distinct.
    """
    a, t = F.normalize(anchor, dim=1), F.normalize(target, dim=1)
    logits = a @ t.t() / temperature
    eye = torch.eye(a.size(0), dtype=torch.bool, device=a.device)
    same = eye if ids is None else ids.view(-1, 1) == ids.view(1, -1)
    if ids is not None:
        logits = logits.masked_fill(same & ~eye, float('-inf'))
    if intra_view_negatives:
        intra = a @ a.t() / temperature
        logits = torch.cat([logits, intra.masked_fill(same, float('-inf'))], dim=1)
    target_idx = torch.arange(a.size(0), device=a.device)
    return F.cross_entropy(logits, target_idx)


#: Which views Eq. 11 contrasts: MMSSL's ``cl_pairing`` option, the ``pairing`` of
#: :func:`contrastive_pairs` (the paper's first).
ClPairing = Annotated[str, Choice('overall', 'items', 'views')]


def contrastive_pairs(pairing: str, user_views: Sequence[Tensor], user_rows: Tensor,
                      item_views: Sequence[Tensor], item_rows: Tensor, users: Tensor,
                      items: Tensor) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    r"""The ``(anchor, target, ids)`` triples that Eq. 11 is summed over
    (:func:`cross_modal_info_nce` on each), for the batch's users ``users`` and positive
    items ``items``.

    - ``'overall'`` (the paper): :math:`(\mathbf{H}^m_u, \mathbf{e}^*_u)` for every modality
      :math:`m`: each modality-aware view against the overall user embedding.
    - ``'items'``: the paper's pairs, plus :math:`(\mathbf{H}^m_i, \mathbf{e}^*_i)` over the
      batch's positive items (a repeated item is not its own negative, through ``ids``).
    - ``'views'``: view to view, :math:`(\mathbf{H}^m_u, \mathbf{H}^{m'}_u)` for every ordered
      pair :math:`m \neq m'`; :math:`\mathbf{e}^*_u`, which BPR trains, is not contrasted.
      Needs at least two modalities (MMSSL checks both when it is built).

    Args:
        user_views, item_views: :math:`\mathbf{H}^m_u` ``[n_u, d]``, :math:`\mathbf{H}^m_i`
            ``[n_i, d]`` (Eq. 8), one per modality.
        user_rows, item_rows: :math:`\mathbf{e}^*_u`, :math:`\mathbf{e}^*_i` (Eq. 12) of the
            batch's users and positive items ``[B, d]`` (the rows BPR already gathered).
        users, items: the batch's (distinct) user ids and positive item ids ``[B]``.
    """
    if pairing == 'views':
        return [(a[users], b[users], None) for m, a in enumerate(user_views)
                for n, b in enumerate(user_views) if m != n]
    pairs = [(h[users], user_rows, None) for h in user_views]
    if pairing == 'items':
        pairs += [(h[items], item_rows, items) for h in item_views]
    return pairs


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     alpha: Tensor | None = None) -> Tensor:
    r"""WGAN-GP penalty (Gulrajani et al., 2017) on dense rows:

    .. math::
        \frac{1}{R}\sum_r \big(\lVert \nabla_{\mathbf{x}} D(\hat{\mathbf{x}}_r) \rVert_2 - 1
        \big)^2, \qquad \hat{\mathbf{x}}_r = \alpha_r \mathbf{x}^{real}_r
        + (1 - \alpha_r) \mathbf{x}^{fake}_r

    with one :math:`\alpha_r \sim U(0, 1)` per row (drawn when ``alpha`` is ``None``). The
    gradient is that of :math:`\sum_r D(\hat{\mathbf{x}}_r)`, as usual.

    Shapes:
        - **real, fake:** :math:`(R, n)`; **alpha:** :math:`(R, 1)`; **output:** scalar

    At least float32: autocast is disabled inside and float16 / bfloat16 inputs are cast to
    float32.
    """
    if alpha is None:
        alpha = torch.rand(real.size(0), 1, device=real.device)
    with _float32(real):
        real, fake, alpha = _up(real), _up(fake), _up(alpha)
        x = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
        out = critic(x)
        grad, = torch.autograd.grad(out.sum(), x, create_graph=True)
        return (grad.norm(2, dim=1) - 1).pow(2).mean()


def projected_gradient_penalty(critic, z_real: Tensor, z_fake: Tensor,
                               alpha: Tensor | None = None, method: str = 'auto',
                               num_samples: int | None = None) -> Tensor:
    r"""The penalty of :func:`gradient_penalty` for a :class:`~mmssl_pyg.nn.critic.
    RelationCritic`, computed from the first layer's outputs
    :math:`\mathbf{z} = \mathbf{W}_1\mathbf{x} + \mathbf{b}_1` of the real and fake rows.

    The first layer is linear, so :math:`\mathbf{W}_1\hat{\mathbf{x}}_r + \mathbf{b}_1 =
    \alpha_r \mathbf{z}^{real}_r + (1-\alpha_r)\mathbf{z}^{fake}_r` and
    :math:`\nabla_{\mathbf{x}} D = \mathbf{W}_1^{\top} \nabla_{\mathbf{z}} D`: the same value
    (up to round-off) without forming the ``n_items``-wide interpolated rows.
    ``z_real`` / ``z_fake`` keep their graph to :math:`\mathbf{W}_1` so the penalty's gradient
    reaches every critic weight.

    Under mixed precision (``torch.autocast``) the penalty is computed in float32: autocast is
    disabled inside and float16 / bfloat16 ``z_real`` / ``z_fake`` are cast to float32 (as in
    :func:`gradient_penalty`).

    **Subsampled estimator** (``num_samples=S < R``): the penalty is averaged over ``S``
    interpolates drawn uniformly without replacement from the ``R`` row pairs (from torch's
    default CPU generator, so a seed gives the same rows on every device). The mean over a
    uniform subset is an unbiased estimate of the mean over all rows, at :math:`S/R` of the
    cost (the double backward through :math:`\mathbf{W}_1` dominates a critic step). With a
    batch-normalised critic the subset's batch statistics replace the full batch's, a small
    second-order difference. ``alpha``, when given, is ``[S, 1]`` for the chosen rows.
    """
    if num_samples is not None and num_samples < z_real.size(0):
        pick = torch.randperm(z_real.size(0))[:num_samples].to(z_real.device)
        z_real, z_fake = z_real[pick], z_fake[pick]
    if alpha is None:
        alpha = torch.rand(z_real.size(0), 1, device=z_real.device)
    with _float32(z_real):
        z_real, z_fake, alpha = _up(z_real), _up(z_fake), _up(alpha)
        z = alpha * z_real + (1 - alpha) * z_fake
        out = critic.head(z)
        grad_z, = torch.autograd.grad(out.sum(), z, create_graph=True)
        return (critic.input_gradient_norm(grad_z, method) - 1).pow(2).mean()


def _float32(like: Tensor):
    """Autocast off on ``like``'s device: the gradient penalty (a double backward through a
    norm) is computed in float32 under mixed precision; its inputs are cast to float32."""
    return torch.autocast(like.device.type, enabled=False)


def _up(t: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32 (float32 and float64 unchanged)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def wasserstein_critic_loss(d_real: Tensor, d_fake: Tensor, penalty: Tensor,
                            gp_weight: float = 0.3) -> Tensor:
    r"""Critic objective of Eq. 7: :math:`\overline{D(\mathrm{fake})} -
    \overline{D(\mathrm{real})} + \gamma \cdot \mathrm{GP}`."""
    return d_fake.mean() - d_real.mean() + gp_weight * penalty


def wasserstein_generator_loss(d_fake: Tensor) -> Tensor:
    r"""Generator objective of Eq. 6: :math:`-\overline{D(\mathrm{fake})}`."""
    return -d_fake.mean()


def critic_objective(critic, real, fake: list, gp_weight: float = 0.3,
                     gp_samples: int | None = None,
                     penalty: Callable | None = None) -> dict[str, Tensor]:
    r"""Eq. 7 for one batch: the real rows ``real`` (repeated once per modality) against
    each modality's generated rows ``fake`` (detached), with the gradient penalty
    ``penalty`` (default :func:`projected_gradient_penalty`) over ``gp_samples``
    interpolates. Returns ``{'loss', 'critic'`` (the Wasserstein estimate, detached)``,
    'gradient_penalty'}``."""
    penalty = projected_gradient_penalty if penalty is None else penalty
    # one pass over W_1 for the real and every fake block
    z_real, *z_fake = critic.project_blocks([real] + [r.detach() for r in fake])
    z_fake = torch.cat(z_fake, 0)
    z_real = z_real.repeat(len(fake), 1)
    d_real, d_fake = critic.head(z_real), critic.head(z_fake)
    gp = penalty(critic, z_real, z_fake, num_samples=gp_samples)
    return {'loss': wasserstein_critic_loss(d_real, d_fake, gp, gp_weight),
            'critic': (d_fake.mean() - d_real.mean()).detach(), 'gradient_penalty': gp.detach()}


def sampled_generator_loss(critic, fake: list, num_samples: int | None = None) -> Tensor:
    r""":math:`\mathcal{L}_G` of Eq. 6 over each modality's generated rows ``fake`` (a list
    of :class:`~mmssl_pyg.nn.lowrank.LowRankRows` blocks of the same batch), the critic's
    parameters frozen (the gradient reaches the rows only). With ``num_samples`` below the
    batch size, the same uniformly drawn rows of every block (torch's default generator)."""
    rows = fake[0].num_rows
    if num_samples is not None and num_samples < rows:
        pick = torch.randperm(rows)[:num_samples].to(critic.lin1.weight.device)
        fake = [r.select_rows(pick) for r in fake]
    with frozen(critic):
        z_fake = torch.cat(critic.project_blocks(fake), 0)
        return wasserstein_generator_loss(critic.head(z_fake))


def relation_reconstruction_loss(user_modal: list[Tensor], item_modal: list[Tensor],
                                 row: Tensor, col: Tensor) -> Tensor:
    r"""The r/p-GAE ablation's replacement of :math:`\mathcal{L}_G`: per modality, BCE between
    :math:`\sigma(\mathbf{u}^m_B{\mathbf{i}^m}^{\top})` and the observed rows
    :math:`\mathbf{A}_B` (entries ``(row, col)``), positives weighted by the
    negative/positive ratio; averaged over the modalities. Forms ``[B, n_i]`` blocks."""
    target = user_modal[0].new_zeros(user_modal[0].size(0), item_modal[0].size(0))
    target[row, col] = 1.0
    num_pos = max(int(row.numel()), 1)
    pos_weight = target.new_tensor((target.numel() - num_pos) / num_pos)
    losses = [F.binary_cross_entropy_with_logits(u @ i.t(), target, pos_weight=pos_weight)
              for u, i in zip(user_modal, item_modal)]
    return torch.stack(losses).mean()
