"""Paired user-level comparisons (mmssl_pyg.training.significance) against scipy and by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmssl_pyg import cli
from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.testing import write_json_dataset
from mmssl_pyg.training.significance import (
    bootstrap_mean_interval,
    compare_checkpoints,
    holm,
    paired_user_test,
    wilcoxon_signed_rank,
)

stats = pytest.importorskip('scipy.stats')


@pytest.mark.parametrize('case', [
    [0.5, -0.2, 0.1, 0.3, -0.4, 0.25, 0.05, 0.6, -0.1, 0.7],          # no ties
    [0.1, -0.1, 0.1, 0.2, -0.2, 0.0, 0.0, 0.3, 0.1, -0.3, 0.2, 0.4],   # tied |d| and zeros
    [1.0, 1.0, 1.0, -1.0, 0.0, 2.0],                                   # heavy ties
])
def test_wilcoxon_matches_scipy_normal_approximation(case):
    w_plus, p, nonzero = wilcoxon_signed_rank(case)
    d = np.asarray(case)
    ref = stats.wilcoxon(d, zero_method='wilcox', correction=False, method='approx',
                         alternative='two-sided')
    nz = d[d != 0]
    assert nonzero == nz.size
    # scipy reports min(W+, W-) for two-sided tests; W+ + W- = n(n+1)/2
    assert min(w_plus, nz.size * (nz.size + 1) / 2 - w_plus) == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)


def test_wilcoxon_on_many_random_users_matches_scipy():
    rng = np.random.default_rng(3)
    # per-user Recall@20 of single-item users is 0 or 1: mostly zeros and massive ties
    a = (rng.random(2000) < 0.11).astype(float)
    b = (rng.random(2000) < 0.09).astype(float)
    w_plus, p, _ = wilcoxon_signed_rank(a - b)
    ref = stats.wilcoxon(a - b, zero_method='wilcox', correction=False, method='approx')
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_by_hand_and_degenerate_cases():
    # d = [3, -1, 2]: ranks of |d| are 3, 1, 2; W+ = 3 + 2 = 5
    w_plus, _, n = wilcoxon_signed_rank([3.0, -1.0, 2.0])
    assert (w_plus, n) == (5.0, 3)
    assert wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0, 0)
    with pytest.raises(ValueError, match='NaN or infinite'):
        wilcoxon_signed_rank([1.0, float('nan')])


def test_bootstrap_interval_is_reproducible_covers_the_mean_and_shrinks_with_users():
    rng = np.random.default_rng(0)
    small = rng.normal(0.01, 0.1, 200)
    lo, hi = bootstrap_mean_interval(small, resamples=2000, seed=1)
    assert (lo, hi) == bootstrap_mean_interval(small, resamples=2000, seed=1)
    assert lo < small.mean() < hi
    # the percentile interval of a mean is close to mean +- 1.96 sd / sqrt(n)
    half = 1.96 * small.std(ddof=1) / np.sqrt(small.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    big = rng.normal(0.01, 0.1, 3200)
    blo, bhi = bootstrap_mean_interval(big, resamples=2000, seed=1)
    assert (bhi - blo) == pytest.approx((hi - lo) / 4, rel=0.15)
    # against scipy's own percentile bootstrap of the mean
    ref = stats.bootstrap((small,), np.mean, n_resamples=4000, method='percentile',
                          confidence_level=0.95, random_state=5)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.003)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.003)


def test_paired_user_test_combines_both():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    b = np.array([0.0, 0.0, 1.0, 0.0, 0.25, 1.0])
    t = paired_user_test(a, b, resamples=500)
    assert t.users == 6 and t.nonzero == 4
    assert t.mean_difference == pytest.approx((1 + 0 + 0 + 1 + 0.25 - 1) / 6)
    assert t.low <= t.mean_difference <= t.high
    assert t.p_value == pytest.approx(stats.wilcoxon(a - b, method='approx').pvalue)


@pytest.mark.parametrize('a, b, message', [
    ([1.0, 2.0], [1.0], 'same users in the same order'),
    ([[1.0]], [[1.0]], '1-D arrays'),
    ([], [], 'empty'),
    ([1.0, float('inf')], [1.0, 0.0], 'NaN or infinite'),
])
def test_paired_user_test_refuses_mismatched_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_user_test(a, b)


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (made non-decreasing)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # monotonicity: a larger raw p is never adjusted below a smaller one's; capped at 1
    assert holm([0.5, 0.6, 0.001]) == pytest.approx([1.0, 1.0, 0.003])
    assert holm([]) == []
    with pytest.raises(ValueError, match=r'lie in \[0, 1\]'):
        holm([0.5, 1.5])


def test_holm_of_one_p_value_bounds_and_the_cap_at_one():
    assert holm([0.3]) == [0.3]                      # one test: nothing to adjust
    assert holm([0.0, 1.0]) == [0.0, 1.0]            # both ends of [0, 1] are valid p-values
    # sorted: 0.6 x2 = 1.2, 0.7 x1 = 0.7 -> non-decreasing 1.2, 1.2 -> capped at 1
    assert holm([0.7, 0.6]) == [1.0, 1.0]
    with pytest.raises(ValueError, match=r'lie in \[0, 1\]'):
        holm([-0.1, 0.5])


def test_bootstrap_resamples_users_with_replacement_from_the_seeded_generator():
    d = np.random.default_rng(0).normal(size=37)
    # the whole procedure in one draw: 700 resamples of the 37 users from default_rng(3), the
    # 2.5% and 97.5% quantiles of their means
    idx = np.random.default_rng(3).integers(0, d.size, size=(700, d.size))
    want = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    assert bootstrap_mean_interval(d, resamples=700, seed=3) == pytest.approx(want, rel=1e-12)
    # 0.8: the 10% and 90% quantiles
    want = np.quantile(d[idx].mean(axis=1), [0.1, 0.9])
    got = bootstrap_mean_interval(d, resamples=700, confidence=0.8, seed=3)
    assert got == pytest.approx(want, rel=1e-12)
    # two users 0 and 1: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_mean_interval([0.0, 1.0], resamples=2000) == (0.0, 1.0)
    assert bootstrap_mean_interval([0.0, 1.0], resamples=2000, confidence=0.4) == (0.5, 0.5)
    assert bootstrap_mean_interval([0.25], resamples=1) == (0.25, 0.25)


@pytest.mark.parametrize('kwargs, message', [
    ({'resamples': 0}, 'resamples must be a positive integer, got 0'),
    ({'resamples': True}, 'resamples must be a positive integer, got True'),
    ({'resamples': 2.0}, 'resamples must be a positive integer, got 2.0'),
    ({'confidence': 0.0}, 'confidence must be strictly between 0 and 1, got 0.0'),
    ({'confidence': 1.0}, 'confidence must be strictly between 0 and 1, got 1.0'),
])
def test_bootstrap_settings_are_checked_in_full(kwargs, message):
    with pytest.raises(ValueError) as err:
        bootstrap_mean_interval([0.1, 0.2], **kwargs)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        bootstrap_mean_interval([])
    assert str(err.value) == 'no differences to resample'


@pytest.mark.parametrize('a, b, message', [
    ([1.0, 2.0], [1.0], 'the two models must be measured on the same users in the same order: '
                        '2 values against 1'),
    ([[1.0]], [[1.0]], 'per-user metrics must be 1-D arrays (one value per user), got shapes '
                       '(1, 1) and (1, 1)'),
    ([1.0], [[1.0]], 'per-user metrics must be 1-D arrays (one value per user), got shapes '
                     '(1,) and (1, 1)'),
    ([], [], 'no users to compare: both arrays are empty'),
    ([1.0, float('inf')], [1.0, 0.0], 'per-user metrics contain NaN or infinite values; drop the '
                                      'users that have no held-out items before comparing'),
    ([1.0, 0.0], [float('nan'), 0.0], 'per-user metrics contain NaN or infinite values; drop the '
                                      'users that have no held-out items before comparing'),
])
def test_paired_user_test_messages_in_full(a, b, message):
    with pytest.raises(ValueError) as err:
        paired_user_test(a, b)
    assert str(err.value) == message


def test_paired_user_test_takes_boolean_hits_and_records_its_settings():
    # per-user Hit@k as booleans: compared as 0/1, differences [1, 0, -1, 1]
    a = np.array([True, True, False, True])
    b = np.array([False, True, True, False])
    t = paired_user_test(a, b, resamples=300, confidence=0.9, seed=4)
    assert (t.users, t.nonzero, t.confidence) == (4, 3, 0.9)
    assert t.mean_difference == 0.25
    d = np.array([1.0, 0.0, -1.0, 1.0])
    assert (t.low, t.high) == bootstrap_mean_interval(d, 300, 0.9, 4)
    # nonzero |d| all tie at rank 2; W+ = 2 + 2 = 4
    assert (t.statistic, t.p_value) == wilcoxon_signed_rank(d)[:2] and t.statistic == 4.0


def test_paired_user_test_bootstraps_with_its_own_seed():
    # continuous differences: the interval's ends move with the seed (with the four values
    # of the boolean test above, seeds 0 and 4 give the same 90% interval)
    a = np.random.default_rng(5).random(31)
    b = np.random.default_rng(6).random(31)
    t = paired_user_test(a, b, resamples=400, confidence=0.9, seed=4)
    assert (t.low, t.high) == bootstrap_mean_interval(a - b, 400, 0.9, 4)
    assert (t.low, t.high) != bootstrap_mean_interval(a - b, 400, 0.9, 0)


@pytest.fixture(scope='module')
def runs(trained, tmp_path_factory):
    """The shared two-epoch run, one of another seed on its data, one on other data of the same
    size (other held-out pairs)."""
    data, run = trained
    base = tmp_path_factory.mktemp('compare')
    other_data = write_json_dataset(base / 'other-data', seed=1)
    for name, folder, extra in (('seed7', data, ['--seed', '7']), ('other', other_data, [])):
        assert cli.main(['train', '--dataset', str(folder), '--run-dir', str(base / name),
                         *FAST, *extra]) == 0
    return run, base / 'seed7', base / 'other'


def _per_user(run, split, k, metric, exclude_val_at_test=False):
    """Each user's metric of a run's selected epoch, by the evaluator."""
    import torch

    from mmssl_pyg.training.evaluator import per_user_metrics
    from mmssl_pyg.training.run import load_run_checkpoint
    model, graph, _ = load_run_checkpoint(run, 'cpu')
    with torch.no_grad():
        user_emb, item_emb = model.get_embedding()
    return per_user_metrics(user_emb, item_emb, graph, split, k,
                            exclude_val_at_test)[metric].double().numpy()


def test_compare_checkpoints_defaults_are_test_recall_at_20_and_the_default_bootstrap(runs):
    import json
    a, b, _ = runs
    out = compare_checkpoints(a, b)
    assert (out['a'], out['b'], out['split'], out['metric']) == (str(a), str(b), 'test',
                                                                 'recall@20')
    for key, run in (('mean_a', a), ('mean_b', b)):  # the test Recall@20 of training
        recorded = json.loads((run / 'metrics.json').read_text())['test']['recall@20']
        assert out[key] == pytest.approx(recorded, abs=1e-6)
    va, vb = _per_user(a, 'test', 20, 'recall'), _per_user(b, 'test', 20, 'recall')
    assert out['test'] == paired_user_test(va, vb, resamples=10_000, confidence=0.95, seed=0)


def test_compare_checkpoints_default_bootstrap_on_a_graded_metric(runs):
    # NDCG@7 on val: graded per-user differences, so the interval depends on the seed, the
    # number of resamples and the confidence (mutants with another default seed or number of
    # resamples passed the test above, on test Recall@20)
    a, b, _ = runs
    va, vb = _per_user(a, 'val', 7, 'ndcg'), _per_user(b, 'val', 7, 'ndcg')
    want = paired_user_test(va, vb, resamples=10_000, confidence=0.95, seed=0)
    assert compare_checkpoints(a, b, 'val', 7, 'ndcg')['test'] == want
    for other in ({'seed': 1}, {'resamples': 10_001}, {'confidence': 0.9}):
        t = paired_user_test(va, vb, **{'resamples': 10_000, 'confidence': 0.95, 'seed': 0,
                                        **other})
        assert (t.low, t.high) != (want.low, want.high), other


def test_compare_checkpoints_passes_every_setting_on(runs):
    a, b, _ = runs
    va, vb = _per_user(a, 'val', 7, 'ndcg', True), _per_user(b, 'val', 7, 'ndcg', True)
    # excluding the validation items changes only the test ranking: val is ranked as before
    out = compare_checkpoints(a, b, 'val', 7, 'ndcg', exclude_val_at_test=True, device='cpu',
                              resamples=300, confidence=0.8, seed=5)
    assert (out['split'], out['metric']) == ('val', 'ndcg@7')
    assert out['test'] == paired_user_test(va, vb, resamples=300, confidence=0.8, seed=5)
    ta = _per_user(a, 'test', 20, 'recall', True)
    assert not np.array_equal(ta, _per_user(a, 'test', 20, 'recall'))  # excluding val matters
    out = compare_checkpoints(a, b, exclude_val_at_test=True, resamples=50)
    assert out['mean_a'] == pytest.approx(ta.mean())
    # k from 1 to the number of items (80)
    assert compare_checkpoints(a, b, k=1, resamples=10)['metric'] == 'recall@1'
    assert compare_checkpoints(a, b, k=80, resamples=10)['metric'] == 'recall@80'


def test_compare_checkpoints_messages_in_full(runs):
    a, b, other = runs
    for kwargs, message in (
            ({'split': 'train'}, "split must be 'val' or 'test', got 'train'"),
            ({'metric': 'hit'}, "metric must be 'recall' or 'ndcg', got 'hit'"),
            ({'k': 0}, 'k must be an integer from 1 to the number of items (80), got 0'),
            ({'k': 81}, 'k must be an integer from 1 to the number of items (80), got 81'),
            ({'k': True}, 'k must be an integer from 1 to the number of items (80), got True'),
            ({'k': 2.0}, 'k must be an integer from 1 to the number of items (80), got 2.0')):
        with pytest.raises(ValueError) as err:
            compare_checkpoints(a, b, **kwargs)
        assert str(err.value) == message
    with pytest.raises(ValueError) as err:  # same sizes, other held-out pairs
        compare_checkpoints(a, other, 'val')
    assert str(err.value) == (f'{a} and {other} were trained on different data (users, items or '
                              f'val pairs differ); compare runs of one dataset')


def test_bootstrap_and_paired_test_defaults_are_10000_resamples_at_95_percent_seed_0():
    a = np.random.default_rng(1).random(23)
    b = np.random.default_rng(2).random(23)
    d = a - b
    idx = np.random.default_rng(0).integers(0, d.size, size=(10_000, d.size))
    want = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    assert bootstrap_mean_interval(d) == pytest.approx(want, rel=1e-12)
    t = paired_user_test(a, b)
    assert (t.low, t.high) == pytest.approx(want, rel=1e-12) and t.confidence == 0.95


def test_wilcoxon_of_one_nonzero_difference_by_hand_and_its_message():
    # n = 1: W+ = 1, mean 1 * 2 / 4 = 0.5, variance 1 * 2 * 3 / 24 = 0.25, z = 1,
    # p = erfc(1 / sqrt(2))
    w_plus, p, n = wilcoxon_signed_rank([0.0, 0.3])
    assert (w_plus, n) == (1.0, 1) and p == pytest.approx(math.erfc(1 / math.sqrt(2)), rel=1e-12)
    with pytest.raises(ValueError) as err:
        wilcoxon_signed_rank([1.0, float('inf')])
    assert str(err.value) == 'differences contain NaN or infinite values'


def test_bootstrap_of_float32_metrics_is_computed_in_float64():
    # per-user metrics often come as float32 (the evaluator's tensors)
    d32 = np.random.default_rng(6).random(41).astype(np.float32)
    d = d32.astype(np.float64)
    idx = np.random.default_rng(2).integers(0, d.size, size=(500, d.size))
    want = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
    assert bootstrap_mean_interval(d32, resamples=500, seed=2) == pytest.approx(want, rel=1e-12)
