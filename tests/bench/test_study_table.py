"""benchmarks/study_table.py: the study's published tables (PROTOCOL.md Sec. 7) on hand-made
study databases and final units: the gate of Sec. 6-7, the row values against hand-worked
figures (means, the seed t-interval, a Holm case), the cost totals and the errors."""
from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from benchmarks import study as S
from benchmarks import study_table as T

stats = pytest.importorskip('scipy.stats')

#: Student-t quantile t(0.975, 4) from a printed table (not from scipy)
T975_4 = 2.7764451051977987
USERS = 30
TRIAL_SECONDS = 10.0
#: the unit seconds every hand-made unit records: fit + data loading + per-user metrics
FIT, LOAD, PER_USER = 10.0, 1.0, 0.5
WINNER = {'model': {'embedding_dim': 64}, 'train': {'lr': 0.002}}
#: test Recall@20 per seed: MMSSL, and MMSSL minus MF (so MF's are 0.25 .. 0.29)
MMSSL_TEST = [0.30, 0.32, 0.31, 0.33, 0.34]
MF_GAP = [0.05, 0.06, 0.04, 0.05, 0.05]
#: MMSSL minus LightGCN per seed: mean 0, the seed interval holds 0
LIGHTGCN_GAP = [0.02, -0.01, 0.00, 0.01, -0.02]
#: a value no unit of the unfinished dataset may show
HIDDEN = 0.7777


def _study_db(folder: Path, states: list[str], seconds: float = TRIAL_SECONDS) -> None:
    """A study database with the tables and columns an Optuna database has and
    ``study_report`` reads: complete trial ``i`` scores ``i / 100`` with ``lr = (i + 1) / 1000``,
    so the last complete trial is the best."""
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / 'study.db')
    con.executescript(
        'CREATE TABLE trials (trial_id INTEGER, number INTEGER, state TEXT, '
        'datetime_start TEXT, datetime_complete TEXT);'
        'CREATE TABLE trial_values (trial_id INTEGER, objective INTEGER, value REAL);'
        'CREATE TABLE trial_user_attributes (trial_id INTEGER, key TEXT, value_json TEXT);'
        'CREATE TABLE trial_heartbeats (trial_id INTEGER, heartbeat TEXT);'
        'CREATE TABLE trial_params (param_id INTEGER, trial_id INTEGER, param_name TEXT, '
        'param_value REAL, distribution_json TEXT);')
    dist = json.dumps({'name': 'FloatDistribution', 'attributes': {'low': 1e-4, 'high': 1e-2}})
    for i, state in enumerate(states):
        con.execute('INSERT INTO trials VALUES (?, ?, ?, NULL, NULL)', (i, i, state))
        con.execute('INSERT INTO trial_user_attributes VALUES (?, ?, ?)',
                    (i, 'seconds', json.dumps(seconds)))
        con.execute('INSERT INTO trial_params VALUES (?, ?, ?, ?, ?)',
                    (i, i, 'lr', (i + 1) / 1000, dist))
        if state == 'COMPLETE':
            con.execute('INSERT INTO trial_values VALUES (?, 0, ?)', (i, i / 100))
    con.commit()
    con.close()


def _finished_study(out: Path, model: str, dataset: str, trials: int = S.TRIALS) -> None:
    """``trials`` finished trials, the last 5 of them pruned, and the study's tuned preset."""
    _study_db(S.study_dir(model, dataset, out),
              ['COMPLETE'] * (trials - 5) + ['PRUNED'] * 5)
    S.winner_file(model, dataset, out).write_text(
        f'provenance:\n  best_trial: {trials - 6}\n  best_value: 0.14\nmodel:\n'
        f'  embedding_dim: 64\ntrain:\n  lr: 0.002\n')


def _unit(final_out: Path, model: str, dataset: str, seed: int, test_recall: float,
          per_user: list[float], **extra) -> Path:
    tuned = model != T.POP
    spec = {'model': model, 'dataset': dataset, 'seed': seed, 'kind': 'train',
            'label': 'tuned' if tuned else 'preset',
            'model_options': dict(WINNER['model']) if tuned else {},
            'train_options': {'epochs': 400, 'patience': 20,
                              **(WINNER['train'] if tuned else {})}}
    key = {'model': model, 'dataset': dataset, 'seed': seed,
           'train': {'seed': seed, **spec['train_options']}}
    unit = {'spec': spec, 'key': key, 'hash': f'{model[:3]}{seed}', 'status': 'ok',
            'stamp': {'commit': 'abc1234', 'dirty': False, 'machine': 'test', 'device': 'cpu',
                      'date': '2026-12-07 00:00:00 UTC'},
            'val': {'recall@20': test_recall + 0.01, 'ndcg@20': test_recall / 2 + 0.01},
            'test': {'recall@20': test_recall, 'ndcg@20': test_recall / 2},
            'per_user': {'k': 20, 'users': list(range(USERS)), 'recall@20': list(per_user),
                         'ndcg@20': list(per_user)},
            'best_epoch': 3, 'epochs_run': 4, 'resumed_from_epoch': None,
            'history': [{'epoch': e, 'epoch_seconds': 2.0, 'eval_seconds': 1.0}
                        for e in range(1, 5)],
            'fit_seconds': FIT, 'load_seconds': LOAD, 'per_user_seconds': PER_USER, **extra}
    path = (final_out / 'accuracy' / 'units' /
            f'{model}__{dataset}__{spec["label"]}__s{seed}__{unit["hash"]}.json')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(unit))
    return path


#: MMSSL's per-user test Recall@20 (the same on every seed): multiples of 1/64, so that the
#: differences below and the means over seeds are exact
OURS_USERS = (np.arange(USERS) + 16) / 64
MF_USER_GAP = 1 / 8
LIGHTGCN_USER_GAP = np.r_[np.full(10, 1 / 64), np.zeros(USERS - 10)]


def _complete_dataset(out: Path, final_out: Path, dataset: str = 'movielens-100k') -> None:
    """Every study finished and every row's 5 units. Per user, MF is 1/8 below MMSSL for every
    user, LightGCN 1/64 below on 10 users, every other row equal to MMSSL."""
    for model in S.MODELS:
        _finished_study(out, model, dataset)
    for seed in S.FINAL_SEEDS:
        for model in T.ROWS:
            test, users = MMSSL_TEST[seed], OURS_USERS
            if model == 'mf':
                test, users = MMSSL_TEST[seed] - MF_GAP[seed], OURS_USERS - MF_USER_GAP
            elif model == 'lightgcn':
                test = MMSSL_TEST[seed] - LIGHTGCN_GAP[seed]
                users = OURS_USERS - LIGHTGCN_USER_GAP
            _unit(final_out, model, dataset, seed, test, users.tolist())


def _unfinished_tiktok(out: Path, final_out: Path, drop: str) -> None:
    """TikTok with every unit's test Recall@20 at :data:`HIDDEN`, and one thing missing:
    ``'trial'`` (LATTICE's study has 19 finished trials and no final units) or ``'pop'``
    (popularity has 4 of its 5 units)."""
    for model in S.MODELS:
        short = drop == 'trial' and model == 'lattice'
        _finished_study(out, model, 'tiktok', S.TRIALS - 1 if short else S.TRIALS)
    for model in T.ROWS:
        if drop == 'trial' and model == 'lattice':
            continue
        for seed in S.FINAL_SEEDS:
            if drop == 'pop' and model == T.POP and seed == 4:
                continue
            _unit(final_out, model, 'tiktok', seed, HIDDEN, [HIDDEN] * USERS)


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader([x for x in path.read_text().splitlines()
                                if not x.startswith('#')]))


def _section(md: str, dataset: str) -> str:
    start = md.index(f'## {dataset}:')
    end = md.find('\n## ', start + 1)
    return md[start:end if end >= 0 else None]


@pytest.fixture
def results(tmp_path):
    out, final_out = tmp_path / 'study', tmp_path / 'study-final'
    _complete_dataset(out, final_out)
    return out, final_out


@pytest.mark.parametrize('drop', ['trial', 'pop'])
def test_a_dataset_not_done_shows_counts_and_no_figure(results, drop):
    out, final_out = results
    _unfinished_tiktok(out, final_out, drop)
    path, lines = T.write_tables(out, final_out, resamples=200)
    md = path.read_text()
    tiktok = _section(md, 'tiktok')
    assert 'no comparison yet' in tiktok and 'no comparison is shown before all are done' in tiktok
    assert f'{HIDDEN}' not in md and 'Recall@20' not in tiktok
    assert f'{HIDDEN}' not in (final_out / 'study_tiktok.csv').read_text()
    rows = {r['model']: r for r in _csv(final_out / 'study_tiktok.csv')}
    if drop == 'trial':
        assert lines[1].startswith('tiktok: 9 of 10 studies have their 20 finished trials; '
                                   'final units on seeds 0, 1, 2, 3, 4: 9 of 10 winners, '
                                   'popularity yes')
        assert rows['lattice']['finished trials (of 20)'] == '19'
        assert rows['lattice']['final units (of 5 seeds)'] == '0'
        assert rows['lattice']['complete / pruned'] == '14 / 5'
    else:
        assert 'tiktok: 10 of 10 studies' in lines[1] and '10 of 10 winners, popularity no' \
            in lines[1]
        assert rows['pop']['final units (of 5 seeds)'] == '4'
    assert rows['mf']['final units (of 5 seeds)'] == '5'
    # the finished dataset beside it is compared
    assert lines[0].endswith('every study is done, the comparison is shown')
    assert 'test Recall@20' in _section(md, 'movielens-100k')


def test_row_values_against_hand_worked_figures(results):
    out, final_out = results
    path, _ = T.write_tables(out, final_out, resamples=500)
    rows = {r['model']: r for r in _csv(final_out / 'study_movielens-100k.csv')}
    assert list(rows) == list(T.ROWS) and len(rows) == 11
    mf = rows['mf']
    # trials 15 complete / 5 pruned; the winner is the study's tuned preset, from trial #14
    assert mf['trials complete / pruned'] == '15 / 5'
    assert mf['selected configuration'] == 'trial #14: model.embedding_dim=64, train.lr=0.002'
    assert rows['pop']['trials complete / pruned'] == 'no study'
    assert mf['seeds'] == '5'
    # MF's test Recall@20 is 0.25 .. 0.29: mean 0.27, sample std sqrt(0.001 / 4)
    assert float(mf['test Recall@20 mean']) == pytest.approx(0.27)
    assert float(mf['test Recall@20 std']) == pytest.approx(math.sqrt(0.001 / 4), rel=1e-5)
    assert float(mf['val Recall@20 mean']) == pytest.approx(0.28)
    assert float(mf['test NDCG@20 mean']) == pytest.approx(0.135)
    assert float(mf['val NDCG@20 mean']) == pytest.approx(0.145)
    # seed-paired MMSSL - MF: 0.05 ± t(0.975, 4) * sd / sqrt(5), sd = sqrt(0.0002 / 4)
    seed = 'seed-paired Δ test Recall@20 (mmssl − row) [95% t]'
    half = T975_4 * math.sqrt(0.0002 / 4) / math.sqrt(5)
    assert float(mf[f'{seed} mean']) == pytest.approx(0.05)
    assert float(mf[f'{seed} lo95']) == pytest.approx(0.05 - half, rel=1e-5)
    assert float(mf[f'{seed} hi95']) == pytest.approx(0.05 + half, rel=1e-5)
    # over users MMSSL - MF is 1/8 for all 30 users: the bootstrap interval is that point
    user = 'user-level Δ test Recall@20 (mmssl − row) [95% bootstrap]'
    assert mf['test users'] == '30'
    for part in ('mean', 'lo95', 'hi95'):
        assert float(mf[f'{user} {part}']) == MF_USER_GAP
    # Holm across the 10 comparisons: 8 rows equal MMSSL (p = 1); MF's p is the smallest
    # (times 10), LightGCN's the second (times 9, not below MF's)
    p_mf, p_lightgcn = (stats.wilcoxon(d, zero_method='wilcox', correction=False,
                                       method='approx').pvalue
                        for d in (np.full(USERS, MF_USER_GAP), LIGHTGCN_USER_GAP))
    assert float(mf['Wilcoxon p']) == pytest.approx(p_mf, rel=1e-5)
    assert float(rows['lightgcn']['Wilcoxon p']) == pytest.approx(p_lightgcn, rel=1e-5)
    assert float(mf['Holm p']) == pytest.approx(10 * p_mf, rel=1e-5)
    assert float(rows['lightgcn']['Holm p']) == pytest.approx(max(10 * p_mf, 9 * p_lightgcn),
                                                             rel=1e-5)
    assert float(rows['lightgcn']['Holm p']) < 0.05
    assert {r['Holm p'] for m, r in rows.items() if m not in ('mf', 'lightgcn', 'mmssl')} == {'1'}
    # the verdict: MF loses on both; LightGCN's users differ but its seed interval holds 0: tie
    assert mf['verdict'] == 'mmssl wins'
    assert rows['lightgcn']['verdict'] == 'tie'
    assert {r['verdict'] for m, r in rows.items() if m not in ('mf', 'mmssl')} == {'tie'}
    assert rows['mmssl'][f'{seed} mean'] == 'reference'
    md = _section(path.read_text(), 'movielens-100k')
    assert '| mf | 15 / 5 | trial #14: model.embedding_dim=64, train.lr=0.002 | 5 | ' \
           '0.2800 ± 0.0158 | 0.1450 ± 0.0079 | 0.2700 ± 0.0158 | 0.1350 ± 0.0079 | ' \
           f'+0.0500 [{0.05 - half:+.4f}, {0.05 + half:+.4f}] | 30 | ' \
           f'+0.1250 [+0.1250, +0.1250] | {p_mf:.3g} | {10 * p_mf:.3g} | mmssl wins |' in md


def test_cost_totals(results):
    """Study seconds are the summed trial seconds (failed trials too, as status.md); a unit's
    are its fit, load and per-user seconds, plus the kept epochs of a resumed unit; a
    cross-dataset run counts on the dataset it ran on."""
    out, final_out = results
    _unfinished_tiktok(out, final_out, 'trial')
    # MF on MovieLens: one failed trial of 7 s more; its seed-0 unit resumed after epoch 2
    con = sqlite3.connect(S.study_dir('mf', 'movielens-100k', out) / 'study.db')
    con.execute("INSERT INTO trials VALUES (20, 20, 'FAIL', NULL, NULL)")
    con.execute("INSERT INTO trial_user_attributes VALUES (20, 'seconds', '7.0')")
    con.commit()
    con.close()
    _unit(final_out, 'mf', 'movielens-100k', 0, 0.25, [0.1] * USERS, resumed_from_epoch=2)
    S.cross_file('mf', 'tiktok', 'movielens-100k', out).write_text(json.dumps({'seconds': 40.0}))
    T.write_tables(out, final_out, resamples=200)
    rows = {(r['dataset'], r['model']): r for r in _csv(final_out / 'study_cost.csv')}
    unit = FIT + LOAD + PER_USER                                   # 11.5 s
    mf = rows[('movielens-100k', 'mf')]
    assert float(mf['study seconds']) == 20 * TRIAL_SECONDS + 7.0
    assert mf['final units'] == '5'
    assert float(mf['final unit seconds']) == 5 * unit + 2 * 3.0    # epochs 1 and 2 kept
    assert float(mf['seconds per final unit']) == pytest.approx((5 * unit + 6) / 5)
    assert float(mf['cross-dataset run seconds']) == 40.0
    assert float(mf['total seconds']) == 207 + 63.5 + 40
    assert rows[('movielens-100k', 'pop')]['study seconds'] == ''
    assert rows[('tiktok', 'lattice')]['final units'] == '0'
    assert float(rows[('tiktok', 'lattice')]['study seconds']) == 19 * TRIAL_SECONDS
    movielens = rows[('movielens-100k', 'all models')]
    assert float(movielens['study seconds']) == 9 * 200 + 207
    assert movielens['final units'] == '55'
    assert float(movielens['final unit seconds']) == 55 * unit + 6
    assert float(movielens['total seconds']) == 2007 + 638.5 + 40
    tiktok = rows[('tiktok', 'all models')]
    assert float(tiktok['total seconds']) == 9 * 200 + 190 + 50 * unit
    assert float(rows[('all datasets', 'all models')]['total seconds']) == 2685.5 + 2565


def test_the_command_prints_the_gate_and_writes_the_report(results, capsys):
    out, final_out = results
    _unfinished_tiktok(out, final_out, 'trial')
    assert S.main(['table', '--out', str(out), '--final-out', str(final_out)]) == 0
    printed = capsys.readouterr().out
    assert 'movielens-100k: 10 of 10 studies' in printed and 'tiktok: 9 of 10' in printed
    assert f'wrote {final_out / "study.md"}' in printed
    assert 'Recall' not in printed and '0.2700' not in printed
    assert {p.name for p in final_out.glob('study*')} == {
        'study.md', 'study_movielens-100k.csv', 'study_tiktok.csv', 'study_cost.csv'}
    with pytest.raises(SystemExit, match='nope: no such folder. Fix: give --out'):
        S.main(['table', '--out', str(out.parent / 'nope'), '--final-out', str(final_out)])
    with pytest.raises(SystemExit) as e:
        S.main(['table', '--models', 'mf'])
    assert e.value.code == 2
    assert 'drop --models' in capsys.readouterr().err


def test_malformed_unit_files_are_named(results):
    out, final_out = results
    path = _unit(final_out, 'vbpr', 'movielens-100k', 9, 0.3, [0.3] * USERS)
    path.write_text('{"spec": ')
    with pytest.raises(SystemExit, match=f'{re.escape(str(path))}: not a JSON unit record.*'
                       'Fix: restore the committed copy'):
        S.main(['table', '--out', str(out), '--final-out', str(final_out)])
    unit = json.loads(_unit(final_out, 'vbpr', 'movielens-100k', 9, 0.3, [0.3] * USERS)
                      .read_text())
    del unit['test']['ndcg@20']
    path.write_text(json.dumps(unit))
    with pytest.raises(T.MalformedResult,
                       match=f"{re.escape(str(path))}: field 'test.ndcg@20' is missing"):
        T.write_tables(out, final_out, resamples=200)
    unit['test']['ndcg@20'], unit['spec']['seed'] = 0.1, '9'
    path.write_text(json.dumps(unit))
    with pytest.raises(T.MalformedResult,
                       match=f"{re.escape(str(path))}: field 'spec.seed' is '9', not an integer"):
        T.write_tables(out, final_out, resamples=200)


def test_a_unit_of_another_configuration_is_refused(results):
    out, final_out = results
    path = _unit(final_out, 'vbpr', 'movielens-100k', 2, 0.3, [0.3] * USERS)
    unit = json.loads(path.read_text())
    unit['spec']['train_options']['lr'] = 0.003
    path.write_text(json.dumps(unit))
    with pytest.raises(T.MalformedResult, match=f"{re.escape(str(path))}: this final unit did "
                       r"not run the study's winner .*spec.train_options\['lr'\] is 0.003"):
        T.write_tables(out, final_out, resamples=200)


def test_a_tuned_preset_of_another_trial_is_refused(results):
    out, final_out = results
    preset = S.winner_file('sgl', 'movielens-100k', out)
    preset.write_text(preset.read_text().replace('best_trial: 14', 'best_trial: 3'))
    with pytest.raises(T.MalformedResult, match=f'{re.escape(str(preset))}: its provenance.'
                       'best_trial is 3, but the best complete trial in the study database is '
                       '14'):
        T.write_tables(out, final_out, resamples=200)


def test_a_malformed_study_database_is_named(results):
    out, final_out = results
    db = S.study_dir('grcn', 'movielens-100k', out) / 'study.db'
    db.write_bytes(b'not a database, just bytes' * 100)
    with pytest.raises(SystemExit,
                       match=f'{re.escape(str(db))}: not a readable Optuna study database'):
        S.main(['table', '--out', str(out), '--final-out', str(final_out)])
