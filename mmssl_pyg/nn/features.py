"""Scaling of raw item features before a model sees them (content only, no interactions).

MMSSL's ``feature_norm='standard'`` (its default) standardises every raw feature
dimension over the items (zero mean, unit variance). Raw features such as TikTok's image
vectors (values 0-13, mean 2.7) share a large common offset: two random items' raw image
vectors have cosine 0.86 on average (0.00 once standardised), so every item's projection
looks alike and the offset dominates the inner products of Eq. 3. The modalities' scales
also differ (mean row norm 33 for image, 4.5 for audio). Standardising removes the offset,
puts the modalities on one scale, keeps the per-dimension contrast (``'l2'``, unit rows,
keeps the offset) and uses no interaction data, so it cannot leak held-out information.
``'none'`` reproduces the release. The baselines default to ``feature_norm='l2'`` (called
``feat_norm`` before; options saved under that name are still read).
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.options import Choice

#: The models' feature-scaling option (see :mod:`mmssl_pyg.utils.options`).
FeatureNorm = Annotated[str, Choice('standard', 'l2', 'none')]


def scale_features(x: Tensor, how: str) -> Tensor:
    """Scale ``[num_items, d]`` raw features; returns float32.

    Args:
        x: the features.
        how: ``'standard'`` (each column to zero mean and unit population variance; constant
            columns only centred), ``'l2'`` (each item's row to unit length; keeps the cosine
            geometry) or ``'none'`` (as given); checked where the option is declared
            (:data:`FeatureNorm`).
    """
    x = x.float()
    if how == 'standard':
        std = x.std(0, unbiased=False)
        return (x - x.mean(0)) / torch.where(std > 1e-12, std, torch.ones_like(std))
    if how == 'l2':
        return F.normalize(x, dim=1)
    return x
