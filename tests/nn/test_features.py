"""Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/lowrank.py``,
``mmssl_pyg/nn/critic_memory.py``, ``mmssl_pyg/nn/gumbel.py`` and ``mmssl_pyg/nn/features.py``:
row selection of :class:`LowRankRows` with any part missing, an empty sparse residual, the
memory budget on a (simulated) CUDA device, Eq. 5's helpers and the feature scaling, each against
a value derived here (by hand, from a dense matrix built here, or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import torch

from mmssl_pyg.nn.features import scale_features


# --------------------------------------------------------------------------- features
def test_feature_norm_choices_are_declared_once_for_every_model():
    """``scale_features`` trusts its mode: the choices are the ``FeatureNorm`` declaration,
    which every model with features uses, and which its constructor checks."""
    from mmssl_pyg.models import MODELS
    from mmssl_pyg.nn.features import FeatureNorm
    from mmssl_pyg.utils.options import declared_options, rule_of
    x = torch.ones(2, 3)
    assert torch.equal(scale_features(x, 'none'), x)
    rules = [opt.rule for cls in set(MODELS.values())
             for opt in declared_options(cls).values() if opt.name.endswith('_norm')]
    assert len(rules) == 7 and all(r == rule_of(FeatureNorm) for r in rules)
    assert rule_of(FeatureNorm).choices == ('standard', 'l2', 'none')


def test_standard_scaling_of_narrow_and_constant_columns():
    """Every column with a spread above 1e-12 goes to unit population variance, also one
    narrower than 1; a column whose standard deviation is 1e-12 or less counts as constant and
    is only centred."""
    d = torch.tensor(1e-12).item()  # 1e-12 in float32
    x = torch.tensor([[1.0, 7.0, -d], [2.0, 7.0, d]])  # std: 0.5, 0, 1e-12
    got = scale_features(x, 'standard')
    want = torch.tensor([[-1.0, 0.0, -d], [1.0, 0.0, d]])  # (x - mean) / std, by hand
    assert torch.equal(got, want)
