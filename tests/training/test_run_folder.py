"""Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused."""
from __future__ import annotations

import json

import pytest
import torch

from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.testing import (
    assert_user_error,
    payloads,
    run_cli,
    tree,
    write_torch_payload,
)
from mmssl_pyg.training.run_folder import RUN_FILES


@pytest.mark.parametrize('name', RUN_FILES)
def test_new_run_refuses_a_folder_holding_any_run_file(name, trained, tmp_path, capsys):
    data, _ = trained
    run = tmp_path / 'run'
    run.mkdir()
    (run / name).write_bytes(b'keep me')
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, 'already holds a run', name, '--resume', '--force')
    assert tree(run) == {name: b'keep me'}


def test_force_and_resume_together_are_refused(run_copy, capsys):
    before = tree(run_copy)
    code, _, err = run_cli(['train', '--resume', '--force', '--run-dir', run_copy], capsys)
    assert_user_error(code, err, '--resume', '--force')
    assert tree(run_copy) == before


@pytest.mark.parametrize('where', ['file', 'inside-file'])
def test_run_dir_that_is_a_file(where, trained, tmp_path, capsys):
    data, _ = trained
    target = tmp_path / 'notes.txt'
    target.write_text('mine')
    run = target if where == 'file' else target / 'run'
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, str(run), 'is a file' if where == 'file' else 'is inside')
    assert target.read_text() == 'mine'


@pytest.mark.parametrize('extra,needle', [
    (['lr=0.5'], 'train.lr'),
    (['embedding_dim=16'], 'model.embedding_dim'),
    (['--model', 'mf'], 'cannot resume'),
    (['--dataset', 'tiktok'], 'cannot resume'),
    (['--wandb', 'online'], '--wandb online needs a Weights & Biases login'),
])
def test_refused_resume_leaves_the_run_untouched(extra, needle, run_copy, capsys,
                                                 monkeypatch, tmp_path):
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'no-netrc'))
    before = tree(run_copy)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, *extra], capsys)
    assert_user_error(code, err, needle)
    assert tree(run_copy) == before


@pytest.mark.parametrize('damage,needle', [
    (lambda run: (run / 'last.pt').unlink(), 'last.pt does not exist'),
    (lambda run: (run / 'last.pt').write_bytes(b''), 'is empty (0 bytes'),
    (lambda run: (run / 'last.pt').write_bytes(b'junk'), 'cannot read checkpoint'),
    (lambda run: torch.save({'epoch': 1}, run / 'last.pt'), 'not a checkpoint of this run'),
    (lambda run: (run / 'config.yaml').write_text('model: [unclosed'), 'not valid YAML'),
    (lambda run: (run / 'config.yaml').write_text('model: lightgcn\n'), 'lacks dataset'),
    (lambda run: (run / 'config.yaml').unlink(), 'config.yaml does not exist'),
], ids=['no-last', 'empty-last', 'junk-last', 'foreign-last', 'bad-yaml', 'partial-yaml',
        'no-config'])
def test_resume_of_a_damaged_run_is_refused_without_writing(damage, needle, run_copy, capsys):
    damage(run_copy)
    before = tree(run_copy)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--no-progress'],
                           capsys)
    assert_user_error(code, err, needle)
    assert tree(run_copy) == before
    assert not (run_copy / '.lock').exists()


def test_resume_with_a_crafted_last_pt_runs_no_code(run_copy, marker, capsys):
    write_torch_payload(run_copy / 'last.pt', payloads(marker)['os.system'])
    before = tree(run_copy)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy], capsys)
    assert_user_error(code, err, 'last.pt', 'posix.system')
    assert tree(run_copy) == before


def test_resume_of_a_missing_folder_creates_nothing(tmp_path, capsys):
    run = tmp_path / 'nowhere'
    code, _, err = run_cli(['train', '--resume', '--run-dir', run], capsys)
    assert_user_error(code, err, 'config.yaml does not exist')
    assert not run.exists()


def test_resume_after_the_raw_data_changed_is_refused(own, capsys):
    data, run = own
    train = json.loads((data / 'raw' / 'train.json').read_text())
    train['0'] = train['0'][:-1]
    (data / 'raw' / 'train.json').write_text(json.dumps(train))
    before = tree(run)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run, '--epochs', '2'], capsys)
    assert_user_error(code, err, 'train.json (different content)', 'trained on the data in')
    assert tree(run) == before


def test_stale_tmp_files_are_removed_when_a_run_resumes(run_copy, capsys):
    (run_copy / '.last.pt.12345.0a1b2c3d.tmp').write_bytes(b'half a checkpoint')
    (run_copy / '.metrics.json.tmp').write_text('{')
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--no-progress'],
                           capsys)
    assert code == 0, err
    assert not list(run_copy.glob('.*.tmp'))
