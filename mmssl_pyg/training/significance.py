"""Paired comparisons of two models over the same test users.

A seed interval says how much a model's mean moves with its initialisation; it ignores which
users happen to be in the test split, which for a few thousand users is often as large as the
gap between two models. These functions compare two models user by user:

- :func:`paired_user_test`: the mean of the per-user differences ``a - b`` with a bootstrap
  percentile interval (users resampled with replacement) and the two-sided Wilcoxon
  signed-rank p-value (:func:`wilcoxon_signed_rank`);
- :func:`holm`: Holm's step-down adjustment of several p-values (one model against several).

Inputs are per-user metrics in the same user order for both models, e.g. each user's test
Recall@20 averaged over seeds (:func:`mmssl_pyg.training.evaluator.per_user_metrics` gives them
for one run)::

    from mmssl_pyg.training.significance import holm, paired_user_test
    tests = {name: paired_user_test(mine, theirs) for name, theirs in baselines.items()}
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()])))
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Resamples drawn per block of the bootstrap (bounds its memory to block x users indices).
_BLOCK = 256


@dataclass(frozen=True)
class PairedTest:
    """The result of :func:`paired_user_test`.

    Attributes:
        users: number of paired users.
        mean_difference: mean over users of ``a - b``.
        low, high: bootstrap percentile interval of the mean difference.
        confidence: the interval's level (e.g. ``0.95``).
        statistic: the Wilcoxon statistic ``W+`` (sum of the ranks of the positive differences).
        p_value: two-sided Wilcoxon signed-rank p-value (``1.0`` when every difference is 0).
        nonzero: users whose difference is not 0 (those the signed-rank test uses).
    """
    users: int
    mean_difference: float
    low: float
    high: float
    confidence: float
    statistic: float
    p_value: float
    nonzero: int


def _as_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f'per-user metrics must be 1-D arrays (one value per user), got shapes '
                         f'{a.shape} and {b.shape}')
    if a.shape != b.shape:
        raise ValueError(f'the two models must be measured on the same users in the same order: '
                         f'{a.size} values against {b.size}')
    if a.size == 0:
        raise ValueError('no users to compare: both arrays are empty')
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError('per-user metrics contain NaN or infinite values; drop the users that '
                         'have no held-out items before comparing')
    return a, b


def wilcoxon_signed_rank(differences) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of paired differences against 0.

    Zero differences are dropped (Wilcoxon's rule); tied absolute differences get their average
    rank, and the variance of the statistic is corrected for the ties. The p-value uses the
    normal approximation without continuity correction (what ``scipy.stats.wilcoxon(d,
    method='approx')`` computes), which is accurate for the thousands of users of a test split.

    Returns:
        ``(W+, p_value, nonzero)``: the sum of the ranks of the positive differences, the
        p-value (``1.0`` when no difference is non-zero), and the number of non-zero ones.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if not np.isfinite(d).all():
        raise ValueError('differences contain NaN or infinite values')
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 0.0, 1.0, 0
    absd = np.abs(d)
    order = np.argsort(absd, kind='stable')
    sorted_abs = absd[order]
    # average ranks of tied |d|: the rank of a run of equal values is the mean of its positions
    starts = np.flatnonzero(np.r_[True, sorted_abs[1:] != sorted_abs[:-1]])
    counts = np.diff(np.r_[starts, n])
    mean_rank = starts + (counts + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, counts)
    w_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((counts ** 3 - counts).sum()) / 48.0
    if var <= 0:
        return w_plus, 1.0, n
    z = (w_plus - mean) / math.sqrt(var)
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return w_plus, min(1.0, p), n


def bootstrap_mean_interval(differences, resamples: int = 10_000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences`` (users resampled with
    replacement ``resamples`` times from a generator seeded with ``seed``)."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError('no differences to resample')
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f'resamples must be a positive integer, got {resamples!r}')
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be strictly between 0 and 1, got {confidence!r}')
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BLOCK):
        size = min(_BLOCK, resamples - start)
        idx = rng.integers(0, d.size, size=(size, d.size))
        means[start:start + size] = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_user_test(a, b, *, resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> PairedTest:
    """Compare model ``a`` with model ``b`` user by user (see the module docstring).

    Args:
        a, b: one metric value per user, the same users in the same order.
        resamples, confidence, seed: of the bootstrap interval.
    """
    a, b = _as_pairs(a, b)
    d = a - b
    low, high = bootstrap_mean_interval(d, resamples, confidence, seed)
    w_plus, p, nonzero = wilcoxon_signed_rank(d)
    return PairedTest(users=int(d.size), mean_difference=float(d.mean()), low=low, high=high,
                      confidence=confidence, statistic=w_plus, p_value=p, nonzero=nonzero)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i`` (``i`` from 0), then made
    non-decreasing in that order and capped at 1. Rejecting where the adjusted value is below
    ``alpha`` controls the family-wise error rate at ``alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return []
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError(f'p-values must lie in [0, 1], got {list(p_values)}')
    m = p.size
    order = np.argsort(p, kind='stable')
    scaled = p[order] * (m - np.arange(m))
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted_sorted
    return out.tolist()


def compare_checkpoints(a, b, split: str = 'test', k: int = 20, metric: str = 'recall', *,
                        exclude_val_at_test: bool = False, device: str = 'auto',
                        resamples: int = 10_000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Paired user-level comparison of two runs of ``mmssl-pyg train`` on the same data.

    ``a`` and ``b`` are checkpoints (``best.pt``) or run folders. Both are ranked on ``split``
    with the evaluator's protocol (:func:`~mmssl_pyg.training.evaluator.per_user_metrics`) and
    compared with :func:`paired_user_test` on ``metric@k`` (``'recall'`` or ``'ndcg'``).
    Runs on other data (other users, items or held-out pairs) are refused.

    Returns:
        ``{'a', 'b', 'split', 'metric', 'mean_a', 'mean_b', 'test': PairedTest}``.
    """
    import torch

    from .evaluator import heldout_pairs, per_user_metrics
    from .run import load_run_checkpoint
    if split not in ('val', 'test'):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if metric not in ('recall', 'ndcg'):
        raise ValueError(f"metric must be 'recall' or 'ndcg', got {metric!r}")
    loaded = [load_run_checkpoint(x, device) for x in (a, b)]
    (_, ga, _), (_, gb, _) = loaded
    if (ga.num_users, ga.num_items) != (gb.num_users, gb.num_items) or not bool(
            (heldout_pairs(ga, split).cpu() == heldout_pairs(gb, split).cpu()).all()):
        raise ValueError(f'{a} and {b} were trained on different data (users, items or {split} '
                         f'pairs differ); compare runs of one dataset')
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= ga.num_items:
        raise ValueError(f'k must be an integer from 1 to the number of items '
                         f'({ga.num_items}), got {k!r}')
    values = []
    for model, graph, _ in loaded:
        with torch.no_grad():
            user_emb, item_emb = model.get_embedding()
        pu = per_user_metrics(user_emb, item_emb, graph, split, k, exclude_val_at_test)
        values.append(pu[metric].double().numpy())
    test = paired_user_test(values[0], values[1], resamples=resamples, confidence=confidence,
                            seed=seed)
    return {'a': str(a), 'b': str(b), 'split': split, 'metric': f'{metric}@{k}',
            'mean_a': float(values[0].mean()), 'mean_b': float(values[1].mean()), 'test': test}
