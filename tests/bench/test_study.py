"""benchmarks/study.py: the equal-budget study's plan, seeds, commit pinning and trial step."""
from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location('study', ROOT / 'benchmarks' / 'study.py')
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def test_plan_covers_ten_models_on_two_datasets_with_one_seed_per_study():
    assert len(study.MODELS) == 10 and 'pop' not in study.MODELS
    assert len(study.PLAN) == 20 == len(set(study.PLAN))
    seeds = [study.sampler_seed(m, d) for m, d in study.PLAN]
    assert len(set(seeds)) == 20
    # the settings PROTOCOL.md registers
    assert study.TRIALS == 20 and study.SETTINGS['startup_trials'] <= study.TRIALS // 2
    assert study.SETTINGS['multivariate'] is True
    assert study.FIXED == ['epochs=400', 'patience=20']
    protocol = (ROOT / 'benchmarks' / 'PROTOCOL.md').read_text()
    for text in ('N = 20 finished trials', 'multivariate, 10 random start-up trials',
                 'PercentilePruner(25, n_startup_trials=5', 'n_warmup_steps=20',
                 'epoch cap 400 and patience 20', '[1e-6, 1]', '[1e-4, 1e-2]'):
        assert text in protocol, text


def test_a_study_is_pinned_to_its_first_commit(tmp_path):
    study.check_commit(tmp_path, 'abc123')
    assert (tmp_path / 'commit.txt').read_text().strip() == 'abc123'
    study.check_commit(tmp_path, 'abc123')  # the same commit continues
    with pytest.raises(SystemExit, match='runs from commit abc123.*amendment'):
        study.check_commit(tmp_path, 'def456')
    with pytest.raises(SystemExit, match='uncommitted changes'):
        study.check_commit(tmp_path / 'other', 'abc123+dirty')
    # an amendment moves the study: its commit is appended, and only that one runs trials
    with open(tmp_path / 'commit.txt', 'a') as fh:
        fh.write('def456\n')
    study.check_commit(tmp_path, 'def456')
    with pytest.raises(SystemExit, match='runs from commit def456'):
        study.check_commit(tmp_path, 'abc123')
    assert (tmp_path / 'commit.txt').read_text() == 'abc123\ndef456\n'


def test_step_runs_trials_with_checkpoints(tmp_path, monkeypatch):
    """A study trial saves a checkpoint every epoch, so one killed by a session's end resumes
    (PROTOCOL.md amendment of 2026-12-07); the other settings are the registered ones."""
    import mmssl_pyg.training.tune as tune_module
    calls = []
    monkeypatch.setattr(tune_module, 'tune', lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setattr(study, 'head_commit', lambda: 'abc123')
    assert study.main(['step', '--models', 'mf', '--datasets', 'tiktok', '--out',
                       str(tmp_path)]) == 0
    (args, kw), = calls
    assert args == ('mf', 'tiktok', 1, None) and kw['trial_checkpoints'] is True
    assert kw['overrides'] == study.FIXED and kw['seed'] == study.sampler_seed('mf', 'tiktok')
    assert {k: kw[k] for k in study.SETTINGS} == study.SETTINGS


def test_finished_trials_counts_complete_and_pruned_only(tmp_path):
    folder = study.study_dir('mf', 'tiktok', tmp_path)
    assert study.finished_trials('mf', 'tiktok', tmp_path) == 0
    folder.mkdir(parents=True)
    con = sqlite3.connect(folder / 'study.db')
    con.execute('CREATE TABLE trials (trial_id INTEGER, state TEXT)')
    con.executemany('INSERT INTO trials VALUES (?, ?)', [
        (0, 'COMPLETE'), (1, 'PRUNED'), (2, 'FAIL'), (3, 'RUNNING'), (4, 'COMPLETE')])
    con.commit()
    con.close()
    assert study.finished_trials('mf', 'tiktok', tmp_path) == 3


def test_step_skips_finished_studies_and_says_when_all_are_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study, 'finished_trials', lambda m, d, out: study.TRIALS)
    assert study.main(['step', '--models', 'mf', '--out', str(tmp_path)]) == 3
    assert 'every selected study has its trials' in capsys.readouterr().out
