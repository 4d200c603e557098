"""benchmarks/accuracy.py: the user-level comparison of MMSSL against every row
(PROTOCOL.md Sec. 6), on hand-made units."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import accuracy as A


def _unit(model, seed, per_user, users=(0, 1, 2, 3)):
    mean = float(np.mean(per_user))
    return {'spec': {'model': model, 'seed': seed, 'label': 'tuned', 'dataset': 'd'},
            'status': 'ok', 'test': {'recall@20': mean}, 'val': {'recall@20': mean},
            'per_user': {'k': 20, 'users': list(users), 'recall@20': list(per_user)}}


def test_user_means_average_each_user_over_seeds_and_refuse_missing_lists():
    units = [_unit('m', 0, [0.0, 1.0, 0.5, 0.0]), _unit('m', 1, [1.0, 1.0, 0.0, 0.0])]
    users, means = A.user_means(units)
    assert users == [0, 1, 2, 3]
    np.testing.assert_allclose(means, [0.5, 1.0, 0.25, 0.0])
    old = dict(units[1])
    del old['per_user']
    assert A.user_means([units[0], old]) is None
    assert A.user_means([units[0], _unit('m', 1, [0, 0, 0, 0], users=(0, 1, 2, 4))]) is None


def test_user_level_rows_verdicts_and_holm():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.uniform(0, 1, size=(5, n))
    users = tuple(range(n))
    ours = [_unit('mmssl', s, np.clip(base[s] + 0.2, 0, 1.5), users) for s in range(5)]
    worse = [_unit('mf', s, base[s], users) for s in range(5)]
    same = [_unit('lightgcn', s, np.asarray(ours[s]['per_user']['recall@20'])
                  + rng.normal(0, 1e-3, n), users) for s in range(5)]
    better = [_unit('vbpr', s, base[s] + 0.5, users) for s in range(5)]
    legacy = [dict(u) for u in worse]
    for u in legacy:
        del u['per_user']
    rows_units = [('mmssl', ours), ('mf', worse), ('lightgcn', same), ('vbpr', better),
                  ('old', legacy)]
    rows, skipped = A.user_level_rows(rows_units, 'mmssl', resamples=2000)
    assert skipped == ['old']
    by = {r[0]: r for r in rows}
    assert by['mf'][-1] == 'mmssl wins' and by['vbpr'][-1] == 'vbpr wins'
    assert by['lightgcn'][-1] == 'tie'
    assert all(r[1] == 5 and r[3] == n for r in rows)
    # Holm never lowers a p-value and the smallest raw p is multiplied by the 3 comparisons
    raw = [float(r[5]) for r in rows]
    adj = [float(r[6]) for r in rows]
    assert all(a >= p for a, p in zip(adj, raw))
    i = int(np.argmin(raw))
    assert adj[i] == pytest.approx(min(1.0, 3 * raw[i]), rel=1e-2)
    # the seed interval and the user-level difference are MMSSL minus the row
    assert by['mf'][2].mean == pytest.approx(
        np.mean([ours[s]['test']['recall@20'] - worse[s]['test']['recall@20'] for s in range(5)]))
    assert by['vbpr'][4].startswith('-')


def test_a_user_level_difference_without_a_seed_interval_is_a_tie():
    """One common seed: the t-interval is undefined, so even a clear user-level gap is a tie."""
    users = tuple(range(300))
    ours = [_unit('mmssl', 0, [1.0] * 300, users)]
    other = [_unit('mf', 0, [0.0] * 300, users)]
    rows, _ = A.user_level_rows([('mmssl', ours), ('mf', other)], 'mmssl', resamples=500)
    assert rows[0][-1] == 'tie' and float(rows[0][6]) < 1e-10
