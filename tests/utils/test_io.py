"""Tests of ``mmssl_pyg/utils/io.py``.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from mmssl_pyg.testing import (
    REPO,
    assert_user_error,
    no_space_for,
    run_cli,
    tree,
    write_json_dataset,
)
from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.utils import io as io_module
from mmssl_pyg.utils.io import FolderLock, FolderLockedError, OutputError, atomic_write


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


def _stale_lock(folder: Path) -> None:
    (folder / '.lock').write_text(json.dumps({'pid': 999_999_999, 'host': os.uname().nodename,
                                              'start': None, 'time': time.time()}))


def _contend(folder: str, barrier, results) -> None:
    barrier.wait()
    warnings.simplefilter('ignore')
    try:
        lock = FolderLock(folder).acquire()
    except FolderLockedError:
        results.put(None)
        return
    start = time.monotonic()
    time.sleep(0.05)
    end = time.monotonic()
    lock.release()
    results.put((start, end))


def write_lock(folder: Path, **fields) -> Path:
    record = {'pid': os.getpid(), 'host': socket.gethostname(), 'start': None,
              'time': time.time(), **fields}
    path = folder / '.lock'
    path.write_text(json.dumps(record))
    return path


def test_stale_lock_replaced_by_concurrent_processes_has_one_holder(tmp_path):
    ctx = mp.get_context('fork')
    overlaps = []
    for round_ in range(40):  # about 15% of rounds overlapped before the fix
        folder = tmp_path / f'r{round_}'
        folder.mkdir()
        _stale_lock(folder)
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(folder), barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        held = [r for r in (results.get(timeout=60) for _ in procs) if r is not None]
        for p in procs:
            p.join(timeout=60)
        assert held, 'nobody got the lock'
        held.sort()
        overlaps += [(a, b) for a, b in zip(held, held[1:]) if b[0] < a[1]]
        assert not (folder / '.lock').exists()
    assert not overlaps, f'{len(overlaps)} times two processes held the lock at once'


def test_stale_lock_takeover_refuses_a_second_contender(tmp_path, monkeypatch):
    """Deterministic version of the race: while one process judges the stale lock, another
    one tries; before the fix both ended up holding the lock."""
    _stale_lock(tmp_path)
    real = FolderLock._stale
    second: list = []

    def stale_with_a_contender(self, owner):
        if not second:
            second.append(None)
            try:
                second[0] = FolderLock(tmp_path).acquire()
            except FolderLockedError as err:
                second[0] = err
        return real(self, owner)

    monkeypatch.setattr(FolderLock, '_stale', stale_with_a_contender)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        first = FolderLock(tmp_path).acquire()
    try:
        assert isinstance(second[0], FolderLockedError), 'two holders of one lock'
    finally:
        first.release()
        if isinstance(second[0], FolderLock):
            second[0].release()


@pytest.mark.parametrize('content', ['garbage', '{"pid": null}', '{"time": "x"}'])
def test_unreadable_fresh_lock_is_reported_plainly(content, tmp_path):
    (tmp_path / '.lock').write_text(content)
    with pytest.raises(FolderLockedError) as info:
        FolderLock(tmp_path).acquire()
    text = str(info.value)
    assert 'pid None' not in text and '1970' not in text, text
    assert 'holds no owner record' in text and 'Fix:' in text and '.lock' in text


def test_a_run_leaves_no_generated_module_in_the_temp_folder(tiny, tmp_path):
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    env = {**os.environ, 'TMPDIR': str(tmp), 'PYTHONPATH': str(REPO),
           'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-m', 'mmssl_pyg.cli', 'train', '--dataset', str(tiny),
                           '--run-dir', str(tmp_path / 'run'), *FAST, '--epochs', '1'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_python_api_run_leaves_no_generated_module_at_exit(tiny, tmp_path):
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    code = ('import sys; from mmssl_pyg.training.run import train_run; '
            f'train_run(model="lightgcn", dataset={str(tiny)!r}, '
            f'run_dir={str(tmp_path / "run")!r}, '
            'epochs=1, wandb="disabled", progress=False, device="cpu", '
            'overrides=["num_threads=1", "embedding_dim=8", "batch_size=64"])')
    env = {**os.environ, 'TMPDIR': str(tmp), 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []


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


def test_atomic_write_replaces_a_link_not_its_target(tmp_path):
    target = tmp_path / 'target.txt'
    target.write_text('target')
    link = tmp_path / 'link.txt'
    link.symlink_to(target)
    atomic_write(link, 'new')
    assert target.read_text() == 'target' and not link.is_symlink()
    assert link.read_text() == 'new'
