"""benchmarks/study_report.py reads an Optuna SQLite study without Optuna: counts by state,
the best complete trial with decoded parameters, and the summed trial seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import study_report as R

optuna = pytest.importorskip('optuna')


def _study(path: Path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f'sqlite:///{path}', study_name='s',
                                direction='maximize')
    dists = {'lr': optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             'model.num_layers': optuna.distributions.IntDistribution(1, 4),
             'model.cl_pairing': optuna.distributions.CategoricalDistribution(
                 ['overall', 'items', 'users'])}
    rows = [  # (state, value, params, seconds)
        (optuna.trial.TrialState.COMPLETE, 0.30, (1e-3, 2, 'items'), 10.0),
        (optuna.trial.TrialState.COMPLETE, 0.35, (2e-3, 3, 'users'), 20.5),
        (optuna.trial.TrialState.PRUNED, 0.50, (3e-3, 1, 'overall'), 4.0),  # never "best"
        (optuna.trial.TrialState.FAIL, None, (4e-3, 1, 'overall'), 1.5),
        # the retry of the failed trial, resumed from its checkpoint: 0.5 s of its 7 s were
        # the dead trial's kept epochs, already in the dead trial's 1.5 s
        (optuna.trial.TrialState.COMPLETE, 0.20, (4e-3, 1, 'overall'), 7.0),
    ]
    for number, (state, value, (lr, layers, pairing), seconds) in enumerate(rows):
        resumed = {'resumed_from': {'trial': 3, 'epoch': 2, 'seconds': 0.5}} if number == 4 \
            else {}
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, distributions=dists,
            params={'lr': lr, 'model.num_layers': layers, 'model.cl_pairing': pairing},
            user_attrs={'seconds': seconds, 'best_epoch': layers * 10, **resumed},
            intermediate_values={0: 0.1} if state == optuna.trial.TrialState.PRUNED else None))
    return study


def test_summarise_counts_best_params_and_seconds(tmp_path):
    folder = tmp_path / 'tiktok' / 'mf'
    folder.mkdir(parents=True)
    _study(folder / 'study.db')
    [s] = R.collect(tmp_path)
    assert (s.dataset, s.model) == ('tiktok', 'mf')
    assert s.counts == {'COMPLETE': 3, 'PRUNED': 1, 'FAIL': 1}
    assert s.finished == 4
    assert s.best_number == 1 and s.best_value == pytest.approx(0.35)
    assert s.best_params == {'lr': pytest.approx(2e-3), 'model.num_layers': 3,
                             'model.cl_pairing': 'users'}
    assert s.best_epoch == 30
    assert s.seconds == pytest.approx(10.0 + 20.5 + 4.0 + 1.5 + (7.0 - 0.5))
    text = R.render([s], target=20)
    assert '| tiktok | mf | 4 / 20 | 3 / 1 / 1 / 0 | 42 | 0.3500 (#1) | 30 |' in text
    assert 'model.cl_pairing=users' in text and 'Studies done: 0' in text


def test_main_refuses_a_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        R.main(['--out', str(tmp_path / 'nope')])
    assert e.value.code == 2
    assert 'no such folder' in capsys.readouterr().err


def test_the_defaults_section_appears_once_the_cross_runs_exist(tmp_path):
    import json
    for dataset, best, lr in (('movielens-100k', 0.4, 0.002), ('tiktok', 0.1, 0.005)):
        folder = tmp_path / dataset / 'mf'
        folder.mkdir(parents=True)
        _study(folder / 'study.db')
        (folder / f'mf-{dataset}.yaml').write_text(
            f'provenance:\n  best_value: {best}\ntrain:\n  lr: {lr}\n')
    assert 'Defaults for new data' not in R.render(R.collect(tmp_path), out=tmp_path)
    (tmp_path / 'tiktok' / 'mf' / 'cross-from-movielens-100k.json').write_text(
        json.dumps({'val': {'recall@20': 0.09}}))
    (tmp_path / 'movielens-100k' / 'mf' / 'cross-from-tiktok.json').write_text(
        json.dumps({'val': {'recall@20': 0.38}}))
    presets = tmp_path / 'configs'
    presets.mkdir()
    text = R.render(R.collect(tmp_path), out=tmp_path, presets=presets)
    assert '| mf | 0.9500 | 0.9750 | tiktok | no |' in text  # no preset file
    (presets / 'mf.yaml').write_text('train:\n  default:\n    lr: 0.002\n')
    assert '| tiktok | no |' in R.render(R.collect(tmp_path), out=tmp_path, presets=presets)
    (presets / 'mf.yaml').write_text('train:\n  default:\n    lr: 0.005\n')
    assert '| tiktok | yes |' in R.render(R.collect(tmp_path), out=tmp_path, presets=presets)


def test_a_file_that_is_not_a_study_database_is_named(tmp_path):
    folder = tmp_path / 'tiktok' / 'mf'
    folder.mkdir(parents=True)
    (folder / 'study.db').write_bytes(b'not sqlite' * 200)
    with pytest.raises(ValueError, match='study.db: not a readable Optuna study database'):
        R.collect(tmp_path)
