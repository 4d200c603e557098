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
S = study


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


def _winner(out: Path, model: str, dataset: str, best: float, lr: float) -> None:
    folder = S.study_dir(model, dataset, out)
    folder.mkdir(parents=True, exist_ok=True)
    S.winner_file(model, dataset, out).write_text(
        f'provenance:\n  best_value: {best}\nmodel:\n  reg_weight: 0.01\ntrain:\n  lr: {lr}\n')


def _cross(out: Path, model: str, source: str, target: str, val: float) -> None:
    import json
    S.cross_file(model, source, target, out).write_text(json.dumps({'val': {'recall@20': val}}))


def test_winner_params_are_the_overrides_of_its_trial(tmp_path):
    _winner(tmp_path, 'mf', 'tiktok', 0.11, 0.005)
    params, best = S.winner_params('mf', 'tiktok', tmp_path)
    assert params == [('model.reg_weight', 0.01), ('train.lr', 0.005)] and best == 0.11


def test_default_rule_of_protocol_section_8(tmp_path):
    """The default is the winner with the higher mean over both datasets of (its validation
    Recall@20 / that dataset's study best); its own dataset counts 1."""
    _winner(tmp_path, 'mf', 'movielens-100k', 0.40, 0.002)
    _winner(tmp_path, 'mf', 'tiktok', 0.10, 0.005)
    assert S.default_choice('mf', tmp_path) is None  # cross-dataset runs missing
    _cross(tmp_path, 'mf', 'movielens-100k', 'tiktok', 0.09)   # 0.9 of TikTok's best
    assert S.default_choice('mf', tmp_path) is None
    _cross(tmp_path, 'mf', 'tiktok', 'movielens-100k', 0.38)   # 0.95 of MovieLens' best
    c = S.default_choice('mf', tmp_path)
    assert c['score'] == pytest.approx({'movielens-100k': 0.95, 'tiktok': 0.975})
    assert c['default_from'] == 'tiktok'
    _cross(tmp_path, 'mf', 'movielens-100k', 'tiktok', 0.05)   # 0.5 of TikTok's best
    _cross(tmp_path, 'mf', 'tiktok', 'movielens-100k', 0.2)    # 0.5: a tie, the first dataset
    assert S.default_choice('mf', tmp_path)['default_from'] == 'movielens-100k'


def test_cross_waits_for_both_studies(tmp_path, capsys):
    assert S.main(['cross', '--models', 'mf', '--out', str(tmp_path)]) == 0
    assert 'not finished' in capsys.readouterr().out
    assert not list(tmp_path.rglob('cross-from-*.json'))
    assert S.main(['defaults', '--models', 'mf', '--out', str(tmp_path)]) == 0
    assert 'not yet' in capsys.readouterr().out


def test_every_sec8_choice_made_so_far_is_the_presets_default():
    """PROTOCOL.md Sec. 8: once a model's two studies and cross runs exist, its preset's
    ``default:`` blocks are the chosen winner's values exactly (the committed study folder)."""
    from benchmarks.study import MODELS, OUT, default_choice, winner_params
    from benchmarks.study_report import PRESETS, preset_default_is
    chosen = {m: default_choice(m, OUT) for m in MODELS}
    assert {m for m, c in chosen.items() if c} >= {'mf', 'lightgcn', 'vbpr'}
    for model, c in chosen.items():
        if c is not None:
            params, _ = winner_params(model, c['default_from'], OUT)
            assert preset_default_is(model, params, PRESETS), model


def _git(cwd: Path, *args: str) -> str:
    import subprocess
    return subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def _finished(out: Path, model: str, dataset: str, n: int) -> Path:
    folder = S.study_dir(model, dataset, out)
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / 'study.db')
    con.execute('CREATE TABLE trials (trial_id INTEGER, state TEXT)')
    con.executemany('INSERT INTO trials VALUES (?, ?)', [(i, 'COMPLETE') for i in range(n)])
    con.commit()
    con.close()
    return folder


def test_final_units_run_only_the_committed_winner_of_a_finished_study(tmp_path):
    out, tuned = tmp_path / 'study', tmp_path / 'tuned'
    _finished(out, 'mf', 'tiktok', S.TRIALS - 1)
    _winner(out, 'mf', 'tiktok', 0.11, 0.005)
    with pytest.raises(SystemExit, match='19 of 20 finished trials'):
        S.check_final('mf', 'tiktok', out, tuned, commit='abc')
    con = sqlite3.connect(S.study_dir('mf', 'tiktok', out) / 'study.db')
    con.execute("INSERT INTO trials VALUES (99, 'PRUNED')")
    con.commit()
    con.close()
    with pytest.raises(SystemExit, match="not the study's winner. Fix: copy"):
        S.check_final('mf', 'tiktok', out, tuned, commit='abc')  # no tuned preset yet
    tuned.mkdir()
    _git(tuned, 'init', '-q')
    preset = tuned / 'mf-tiktok.yaml'
    preset.write_bytes(S.winner_file('mf', 'tiktok', out).read_bytes().replace(b'0.005', b'0.006'))
    with pytest.raises(SystemExit, match="not the study's winner"):
        S.check_final('mf', 'tiktok', out, tuned, commit='abc')  # another trial's values
    preset.write_bytes(S.winner_file('mf', 'tiktok', out).read_bytes())
    with pytest.raises(SystemExit, match='not committed'):
        S.check_final('mf', 'tiktok', out, tuned, commit='abc')
    _git(tuned, 'add', preset.name)
    _git(tuned, 'commit', '-q', '-m', 'winner')
    with pytest.raises(SystemExit, match='uncommitted changes'):
        S.check_final('mf', 'tiktok', out, tuned, commit='abc+dirty')
    S.check_final('mf', 'tiktok', out, tuned, commit='abc')  # accepted


def test_final_command_is_the_protocols_accuracy_run():
    cmd = S.final_command('bm3', 'movielens-100k', Path('/r/final'))
    assert cmd[1:] == [
        '-m', 'benchmarks.run', 'accuracy', '--dataset', 'movielens-100k', '--models', 'bm3',
        '--id-datasets', '--tuned', 'presets', '--epochs', '400', '--patience', '20',
        '--seeds', '0', '1', '2', '3', '4', '--no-reuse', '--wandb', 'disabled',
        '--threads', '1', '--no-progress', '--out', '/r/final']


def _optuna_trials(folder: Path, n: int) -> None:
    """``n`` more finished trials in ``folder/study.db`` (a real Optuna database)."""
    import optuna
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f'sqlite:///{folder / "study.db"}', study_name='s',
                        direction='maximize', load_if_exists=True).optimize(
        lambda t: t.suggest_float('lr', 0.0, 1.0), n_trials=n)


def test_snapshot_stages_a_consistent_copy_while_the_database_is_open(tmp_path):
    repo = tmp_path / 'repo'
    out = repo / 'results' / 'study'
    folder = S.study_dir('mf', 'tiktok', out)
    _optuna_trials(folder, 3)
    (folder / 'trials.log').write_text('trial 0\n')
    _git(repo, 'init', '-q')
    # a writer holds an open transaction that is not committed: the staged copy is the
    # committed state, and the working file is left alone
    writer = sqlite3.connect(folder / 'study.db')
    writer.execute("UPDATE trials SET state = 'FAIL'")
    assert S.main(['snapshot', '--out', str(out)]) == 0
    writer.rollback()
    writer.close()
    staged = set(_git(repo, 'diff', '--cached', '--name-only').split())
    assert staged == {'results/study/tiktok/mf/study.db', 'results/study/tiktok/mf/trials.log',
                      'results/study/status.md'}
    blob = tmp_path / 'staged.db'
    blob.write_bytes(__import__('subprocess').run(
        ['git', 'show', ':results/study/tiktok/mf/study.db'], cwd=repo, check=True,
        capture_output=True).stdout)
    assert S.finished_trials('mf', 'tiktok', out) == 3
    con = sqlite3.connect(blob)
    assert con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone() == (3,)
    con.close()
    assert '| tiktok | mf | 3 / 20 |' in (out / 'status.md').read_text()


def test_snapshot_skips_a_database_whose_rows_are_committed(tmp_path):
    repo = tmp_path / 'repo'
    out = repo / 'study'
    folder = S.study_dir('mf', 'tiktok', out)
    _optuna_trials(folder, 2)
    _git(repo, 'init', '-q')
    assert S.main(['snapshot', '--out', str(out)]) == 0
    _git(repo, 'commit', '-q', '-m', 'first')
    assert S.main(['snapshot', '--out', str(out)]) == 0  # a new copy, the same rows
    assert _git(repo, 'diff', '--cached', '--name-only').split() == []
    _optuna_trials(folder, 1)
    assert S.main(['snapshot', '--out', str(out)]) == 0
    assert _git(repo, 'diff', '--cached', '--name-only').split() == [
        'study/status.md', 'study/tiktok/mf/study.db']
