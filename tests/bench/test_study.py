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
    with pytest.raises(SystemExit, match='started at commit abc123.*amendment'):
        study.check_commit(tmp_path, 'def456')
    with pytest.raises(SystemExit, match='uncommitted changes'):
        study.check_commit(tmp_path / 'other', 'abc123+dirty')


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
