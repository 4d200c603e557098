"""Scaling of raw item features before a model sees them (content only, no interactions)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FEATURE_NORMS = ('standard', 'l2', 'none')


def scale_features(x: Tensor, how: str, option: str = 'feature_norm') -> Tensor:
    """Scale ``[num_items, d]`` raw features; returns float32.

    Args:
        x: the features.
        how: ``'standard'`` (each column to zero mean and unit population variance; constant
            columns only centred), ``'l2'`` (each item's row to unit length; keeps the cosine
            geometry) or ``'none'`` (as given).
        option: the option's name in the error message (``feature_norm`` / ``feat_norm``).
    """
    if how not in FEATURE_NORMS:
        raise ValueError(f'{option} must be one of {FEATURE_NORMS}, got {how!r}')
    x = x.float()
    if how == 'standard':
        std = x.std(0, unbiased=False)
        return (x - x.mean(0)) / torch.where(std > 1e-12, std, torch.ones_like(std))
    if how == 'l2':
        return F.normalize(x, dim=1)
    return x
