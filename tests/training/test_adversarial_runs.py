"""Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml
from _adversarial import (
    FAST,
    assert_no_marker,
    assert_user_error,
    payloads,
    run_cli,
    tree,
    write_torch_payload,
)
from test_training_utils import write_json_dataset

from mmssl_pyg.training import load_checkpoint
from mmssl_pyg.training.run_folder import RUN_FILES
from mmssl_pyg.utils import io as io_module
from mmssl_pyg.utils.io import FolderLock, FolderLockedError, OutputError, atomic_write

ROOT_USER = hasattr(os, 'geteuid') and os.geteuid() == 0


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert_no_marker(path)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A finished two-epoch run on a 120-user, 80-item dataset (never modified: tests that
    damage a run work on a copy)."""
    base = tmp_path_factory.mktemp('runs')
    data = write_json_dataset(base / 'tiny')
    run = base / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST]) == 0
    return data, run


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    _, run = trained
    return Path(shutil.copytree(run, tmp_path / 'run'))


@pytest.fixture
def own(tmp_path):
    """A dataset and a one-epoch run of this test only (for tests that edit the data)."""
    data = write_json_dataset(tmp_path / 'own-data', num_users=60, num_items=60, per_user=8)
    run = tmp_path / 'own-run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST,
                     '--epochs', '1']) == 0
    return data, run


def metrics_of(run: Path) -> dict:
    return json.loads((run / 'metrics.json').read_text())


def evaluate_json(capsys, checkpoint, *extra) -> tuple[int, dict | None, str]:
    code, out, err = run_cli(['evaluate', checkpoint, '--json', '--device', 'cpu', *extra],
                             capsys)
    return code, (json.loads(out) if code == 0 else None), err


def no_space_for(name_part: str):
    """An ``os.fsync`` that fails like a full disk for temporary files of ``name_part``."""
    real = os.fsync

    def fsync(fd):
        if name_part in os.readlink(f'/proc/self/fd/{fd}'):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd)
    return fsync


def write_lock(folder: Path, **fields) -> Path:
    record = {'pid': os.getpid(), 'host': socket.gethostname(), 'start': None,
              'time': time.time(), **fields}
    path = folder / '.lock'
    path.write_text(json.dumps(record))
    return path


# --------------------------------------------------------------------------------------------
# a new run never writes over another run


@pytest.mark.parametrize('name', RUN_FILES)
def test_new_run_refuses_a_folder_holding_any_run_file(name, trained, tmp_path, capsys):
    data, _ = trained
    run = tmp_path / 'run'
    run.mkdir()
    (run / name).write_bytes(b'keep me')
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, 'already holds a run', name, '--resume', '--force')
    assert tree(run) == {name: b'keep me'}


def test_force_replaces_the_run(run_copy, trained, capsys):
    data, _ = trained
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run_copy, *FAST,
                            '--epochs', '1', '--force'], capsys)
    assert code == 0, err
    assert metrics_of(run_copy)['epochs_run'] == 1
    assert load_checkpoint(run_copy / 'last.pt')['epoch'] == 1


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


# --------------------------------------------------------------------------------------------
# a refused --resume writes nothing


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


# --------------------------------------------------------------------------------------------
# one process per run folder


def test_run_folder_in_use_is_refused(run_copy, capsys):
    write_lock(run_copy, start=io_module._process_start(os.getpid()))
    before = tree(run_copy)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy], capsys)
    assert_user_error(code, err, 'is in use by another mmssl-pyg process',
                      f'pid {os.getpid()}', '.lock')
    assert tree(run_copy) == before


def test_new_run_into_a_locked_empty_folder_is_refused(trained, tmp_path, capsys):
    data, _ = trained
    run = tmp_path / 'run'
    run.mkdir()
    with FolderLock(run):
        code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, 'is in use')
    assert tree(run) == {}


def test_lock_of_another_host_is_refused(run_copy, capsys):
    write_lock(run_copy, host='elsewhere.example', pid=1)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy], capsys)
    assert_user_error(code, err, 'on elsewhere.example')


@pytest.mark.parametrize('fields', [
    {'pid': 999_999_999},                      # the process is gone
    {'pid': 1, 'start': 'not-its-start-time'},  # the pid was reused by another process
], ids=['dead-pid', 'reused-pid'])
def test_stale_lock_is_replaced_with_a_warning(fields, run_copy, capsys):
    write_lock(run_copy, **fields)
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--no-progress'],
                           capsys)
    assert code == 0, err
    assert 'mmssl-pyg train: warning:' in err and 'removed a stale lock' in err
    assert not (run_copy / '.lock').exists()


@pytest.mark.parametrize('content', ['', '{"pid": "abc"}', '[1, 2]'],
                         ids=['empty', 'bad-pid', 'not-a-record'])
def test_unreadable_lock_file_is_stale_only_when_old(tmp_path, content):
    (tmp_path / '.lock').write_text(content)
    with pytest.raises(FolderLockedError):
        FolderLock(tmp_path).acquire()
    old = time.time() - 60
    os.utime(tmp_path / '.lock', (old, old))
    with pytest.warns(UserWarning, match='stale lock'):
        lock = FolderLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / '.lock').exists()


def test_lock_is_released_when_training_fails(trained, tmp_path, capsys, monkeypatch):
    from mmssl_pyg.training.trainer import Trainer

    def failing_fit(self, resume=False):
        raise RuntimeError('boom in the middle of training')

    monkeypatch.setattr(Trainer, 'fit', failing_fit)
    data, _ = trained
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, 'boom in the middle of training')
    assert not (run / '.lock').exists()


def test_second_acquire_in_the_same_process_is_refused(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(FolderLockedError, match='in use'):
            FolderLock(tmp_path).acquire()
    assert not (tmp_path / '.lock').exists()


# --------------------------------------------------------------------------------------------
# full disks


def test_disk_full_while_a_resumed_run_saves_loses_nothing(run_copy, capsys, monkeypatch):
    monkeypatch.setattr(os, 'fsync', no_space_for('last.pt'))
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--epochs', '3',
                            '--no-progress'], capsys)
    assert_user_error(code, err, 'no space left on device', 'last.pt')
    assert load_checkpoint(run_copy / 'last.pt')['epoch'] == 2  # the previous, whole
    assert not list(run_copy.glob('.*.tmp')) and not (run_copy / '.lock').exists()
    monkeypatch.undo()
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--epochs', '3',
                            '--no-progress'], capsys)
    assert code == 0, err
    assert metrics_of(run_copy)['epochs_run'] == 3


def test_disk_full_writing_metrics_keeps_the_old_file(run_copy, capsys, monkeypatch):
    before = (run_copy / 'metrics.json').read_bytes()
    monkeypatch.setattr(os, 'fsync', no_space_for('metrics.json'))
    code, _, err = run_cli(['train', '--resume', '--run-dir', run_copy, '--no-progress'],
                           capsys)
    assert_user_error(code, err, 'no space left on device', 'metrics.json')
    assert (run_copy / 'metrics.json').read_bytes() == before


def test_atomic_write_failure_keeps_old_content_and_leaves_no_tmp(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')

    def half(f):
        f.write('new, but only ha')
        raise OSError(errno.ENOSPC, 'No space left on device')

    with pytest.raises(OutputError, match='no space left on device'):
        atomic_write(path, half, binary=False)
    assert path.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['out.txt']


def test_killed_output_write_leaves_a_tmp_file_the_next_write_removes(trained, tmp_path,
                                                                       capsys):
    _, run = trained
    out = tmp_path / 'recs.csv'
    left = tmp_path / '.recs.csv.999999999.0a1b2c3d.tmp'  # a writer killed mid-write
    left.write_text('user,rank,item,sc')
    code, _, err = run_cli(['recommend', run, '--output', out, '-k', '1'], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['recs.csv']


def test_atomic_write_replaces_a_link_not_its_target(tmp_path):
    target = tmp_path / 'target.txt'
    target.write_text('target')
    link = tmp_path / 'link.txt'
    link.symlink_to(target)
    atomic_write(link, 'new')
    assert target.read_text() == 'target' and not link.is_symlink()
    assert link.read_text() == 'new'


# --------------------------------------------------------------------------------------------
# recommend --output


@pytest.fixture
def no_compute(monkeypatch):
    """Fail if a recommendation is computed (checks must come first)."""
    import mmssl_pyg.training.run as run_module

    def refuse(*args, **kwargs):
        raise AssertionError('the checkpoint was loaded before the output was checked')

    monkeypatch.setattr(run_module, 'load_run_checkpoint', refuse)


def test_output_that_exists_is_refused_before_any_work(trained, tmp_path, capsys, no_compute):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('mine')
    code, _, err = run_cli(['recommend', run, '--output', out], capsys)
    assert_user_error(code, err, str(out), 'already exists', '--force')
    assert out.read_text() == 'mine'


def test_output_force_replaces_with_a_complete_file(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('mine')
    code, _, err = run_cli(['recommend', run, '--output', out, '--force', '-k', '3'], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 120 * 3 and rows[0].keys() == {'user', 'rank', 'item', 'score'}


@pytest.mark.parametrize('kind,needle', [
    ('folder', 'is a folder'),
    ('link', 'is a symbolic link'),
    ('dangling-link', 'is a symbolic link'),
    ('under-a-file', 'is a file, not a folder'),
    ('suffix', "unsupported type '.txt'"),
    ('empty', 'not a file name'),
])
def test_bad_output_paths_are_refused_before_any_work(kind, needle, trained, tmp_path, capsys,
                                                      no_compute):
    _, run = trained
    target = tmp_path / 'target.csv'
    target.write_text('target')
    out = {'folder': tmp_path, 'link': tmp_path / 'link.csv',
           'dangling-link': tmp_path / 'dangling.csv',
           'under-a-file': target / 'recs.csv', 'suffix': tmp_path / 'recs.txt',
           'empty': ''}[kind]
    if kind == 'link':
        out.symlink_to(target)
    if kind == 'dangling-link':
        out.symlink_to(tmp_path / 'nothing.csv')
    code, _, err = run_cli(['recommend', run, '--output', out, '--force'], capsys)
    assert_user_error(code, err, needle)
    assert target.read_text() == 'target' and not (tmp_path / 'nothing.csv').exists()


def test_output_in_a_new_folder_is_created(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / 'new' / 'deeper' / 'recs.csv'
    code, _, err = run_cli(['recommend', run, '--output', out, '-k', '2'], capsys)
    assert code == 0, err
    assert len(list(csv.DictReader(out.open()))) == 120 * 2


def test_disk_full_on_output_keeps_the_old_file(trained, tmp_path, capsys, monkeypatch):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('old recommendations')
    monkeypatch.setattr(os, 'fsync', no_space_for('recs.csv'))
    code, _, err = run_cli(['recommend', run, '--output', out, '--force'], capsys)
    assert_user_error(code, err, 'no space left on device', 'recs.csv')
    assert out.read_text() == 'old recommendations'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['recs.csv']


@pytest.mark.skipif(ROOT_USER, reason='root can write into read-only folders')
def test_output_in_a_read_only_folder_is_refused(trained, tmp_path, capsys, no_compute):
    _, run = trained
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run_cli(['recommend', run, '--output', folder / 'r.csv'], capsys)
    finally:
        folder.chmod(0o700)
    assert_user_error(code, err, 'is not writable')


# --------------------------------------------------------------------------------------------
# damaged and malicious checkpoints


@pytest.mark.parametrize('make,needle', [
    (lambda p: p.write_bytes(b''), 'is empty (0 bytes'),
    (lambda p: p.write_bytes(b'\x00' * 64), 'cannot read checkpoint'),
    (lambda p: torch.save(torch.ones(2), p), 'holds a Tensor'),
    (lambda p: torch.save({'epoch': 1}, p), 'not written by mmssl-pyg train'),
    (lambda p: p.mkdir(), 'holds neither best.pt nor last.pt'),
], ids=['empty', 'zeros', 'tensor', 'no-meta', 'empty-folder'])
def test_bad_checkpoint_files(make, needle, tmp_path, capsys):
    path = tmp_path / 'best.pt'
    make(path)
    code, _, err = evaluate_json(capsys, path)
    assert_user_error(code, err, needle)


def test_truncated_checkpoint(trained, tmp_path, capsys):
    _, run = trained
    blob = (run / 'best.pt').read_bytes()
    (tmp_path / 'best.pt').write_bytes(blob[: len(blob) // 3])
    code, _, err = evaluate_json(capsys, tmp_path / 'best.pt')
    assert_user_error(code, err, 'truncated, damaged')


@pytest.mark.parametrize('command', ['evaluate', 'recommend'])
def test_crafted_checkpoint_runs_no_code(command, tmp_path, marker, capsys):
    path = write_torch_payload(tmp_path / 'best.pt', payloads(marker)['exec'])
    extra = ['--users', '0'] if command == 'recommend' else []
    code, _, err = run_cli([command, path, *extra], capsys)
    assert_user_error(code, err, 'best.pt', 'it asks for exec', 'could run code')


def test_checkpoint_that_does_not_fit_its_record(trained, tmp_path, capsys):
    _, run = trained
    state = load_checkpoint(run / 'best.pt')
    state['meta']['model_kwargs']['embedding_dim'] = 16
    torch.save(state, tmp_path / 'best.pt')
    code, _, err = evaluate_json(capsys, tmp_path / 'best.pt')
    assert_user_error(code, err, 'does not fit the model', 'size mismatch')


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = evaluate_json(capsys, tmp_path / 'nothing.pt')
    assert_user_error(code, err, 'nothing.pt', 'does not exist')


# --------------------------------------------------------------------------------------------
# checkpoints find their own data, or refuse other data


def test_evaluate_from_another_folder_uses_the_training_data(tmp_path, capsys, monkeypatch):
    """Trained with a relative --dataset; evaluated from a folder where the same relative
    path holds other data: the checkpoint's absolute folder is used."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_json_dataset(a / 'data' / 'tiny', seed=0)
    write_json_dataset(b / 'data' / 'tiny', seed=1)
    monkeypatch.chdir(a)
    code, _, err = run_cli(['train', '--dataset', 'data/tiny', '--run-dir', 'run', *FAST],
                           capsys)
    assert code == 0, err
    want = metrics_of(a / 'run')
    monkeypatch.chdir(b)
    code, got, err = evaluate_json(capsys, a / 'run')
    assert code == 0, err
    assert got['metrics'] == pytest.approx(want['test'])
    config = yaml.safe_load((a / 'run' / 'config.yaml').read_text())
    assert config['dataset'] == str((a / 'data' / 'tiny').resolve())
    assert config['data']['root'] == str((a / 'data' / 'tiny').resolve())


def test_evaluate_after_the_raw_data_changed_is_refused(own, capsys):
    data, run = own
    test = json.loads((data / 'raw' / 'test.json').read_text())
    test['1'] = [i for i in range(60) if i not in test['1']][:1]
    (data / 'raw' / 'test.json').write_text(json.dumps(test))
    code, _, err = evaluate_json(capsys, run)
    assert_user_error(code, err, 'test.json (different content)', '--root')


def test_root_pointing_at_other_data_is_refused(own, tmp_path, capsys):
    _, run = own
    other = write_json_dataset(tmp_path / 'other', num_users=60, num_items=60, per_user=8,
                               seed=5)
    code, _, err = evaluate_json(capsys, run, '--root', other)
    assert_user_error(code, err, str(other.resolve()), 'differs')


def test_moved_data_is_found_with_root_and_refused_without(own, tmp_path, capsys):
    data, run = own
    want = metrics_of(run)['test']
    moved = Path(shutil.move(str(data), str(tmp_path / 'moved')))
    code, _, err = evaluate_json(capsys, run)
    assert_user_error(code, err, 'no longer exists', '--root')
    code, got, err = evaluate_json(capsys, run, '--root', moved)
    assert code == 0, err
    assert got['metrics'] == pytest.approx(want)


def test_evaluate_and_recommend_force_reload_rebuild_the_cache(own, capsys):
    data, run = own
    processed = next((data / 'processed').glob('data_*.pt'))
    os.utime(processed, ns=(0, 0))
    code, got, err = evaluate_json(capsys, run, '--force-reload')
    assert code == 0, err
    assert got['metrics'] == pytest.approx(metrics_of(run)['test'])
    assert processed.stat().st_mtime_ns != 0
    os.utime(processed, ns=(0, 0))
    code, _, err = run_cli(['recommend', run, '--users', '0', '--force-reload'], capsys)
    assert code == 0, err
    assert processed.stat().st_mtime_ns != 0


def test_checkpoint_of_an_older_version_is_evaluated_with_a_warning(own, tmp_path, capsys):
    _, run = own
    state = load_checkpoint(run / 'best.pt')
    del state['meta']['data']
    torch.save(state, tmp_path / 'best.pt')
    code, got, err = evaluate_json(capsys, tmp_path / 'best.pt')
    assert code == 0, err
    assert 'warning: checkpoint' in err and 'older version' in err
    assert got['metrics'] == pytest.approx(metrics_of(run)['test'])


# --------------------------------------------------------------------------------------------
# Weights & Biases


def test_wandb_online_without_login_fails_before_anything(trained, tmp_path, capsys,
                                                          monkeypatch):
    data, _ = trained
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_IDENTITY_TOKEN_FILE', raising=False)
    monkeypatch.setenv('NETRC', str(tmp_path / 'empty-netrc'))
    (tmp_path / 'empty-netrc').write_text('')
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run, '--model',
                            'lightgcn', '--wandb', 'online'], capsys)
    assert_user_error(code, err, '--wandb online needs a Weights & Biases login',
                      'wandb login', '--wandb offline')
    assert 'DEBUG' not in err and not run.exists()


def test_wandb_login_is_found_in_netrc_or_the_environment(tmp_path, monkeypatch):
    from mmssl_pyg.training.tracking import wandb_login_found
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_IDENTITY_TOKEN_FILE', raising=False)
    monkeypatch.delenv('WANDB_BASE_URL', raising=False)
    netrc = tmp_path / 'netrc'
    netrc.write_text('machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n')
    netrc.chmod(0o600)
    monkeypatch.setenv('NETRC', str(netrc))
    assert wandb_login_found()
    netrc.write_text('machine other.example\n  login user\n  password x\n')
    assert not wandb_login_found()
    monkeypatch.setenv('WANDB_API_KEY', 'k' * 40)
    assert wandb_login_found()
