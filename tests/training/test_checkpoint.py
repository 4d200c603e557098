"""Tests of ``mmssl_pyg/training/checkpoint.py``.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused.

Atomic checkpoints, random states, and a real training process killed and resumed."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.testing import (
    assert_user_error,
    evaluate_json,
    metrics_of,
    no_space_for,
    payloads,
    run_cli,
    write_json_dataset,
    write_torch_payload,
)
from mmssl_pyg.training import load_checkpoint, save_checkpoint
from mmssl_pyg.training.checkpoint import rng_state, set_rng_state


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


@pytest.fixture(scope='module')
def finished(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp('finished') / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(tiny), '--run-dir', str(run), *FAST,
                     '--epochs', '1']) == 0
    return run


ROOT = Path(__file__).resolve().parents[2]


def _strip(history):
    return [{k: v for k, v in h.items() if 'seconds' not in k and 'memory' not in k}
            for h in history]


def _kill_and_resume(cmd: list[str], tmp_path: Path, env: dict, epochs: int,
                     timeout: float = 60) -> tuple[dict, dict, int]:
    """Run ``cmd`` twice with the same seed: once through (``full/``), once SIGKILLed as soon
    as its first checkpoint exists (``cut/``) and then resumed with ``--resume``. Returns
    both ``metrics.json`` and the epoch the killed run had checkpointed."""
    full_dir, cut_dir = tmp_path / 'full', tmp_path / 'cut'
    t0 = time.time()
    full = subprocess.Popen([*cmd, '--run-dir', str(full_dir)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen([*cmd, '--run-dir', str(cut_dir)], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (cut_dir / 'last.pt').exists():
            assert victim.poll() is None, 'the training process ended before a checkpoint'
            assert time.time() - t0 < timeout, f'no checkpoint after {timeout} s'
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (cut_dir / 'metrics.json').exists()  # it really died mid-run
    killed_at = load_checkpoint(cut_dir / 'last.pt')['epoch']
    assert 1 <= killed_at < epochs

    out, _ = full.communicate(timeout=timeout)
    assert full.returncode == 0, out
    resumed = subprocess.run(
        [sys.executable, '-m', 'mmssl_pyg.cli', 'train', '--resume', '--run-dir', str(cut_dir),
         '--no-progress'], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr
    assert f'resumed {cut_dir} after epoch {killed_at}' in resumed.stdout
    a = json.loads((full_dir / 'metrics.json').read_text())
    b = json.loads((cut_dir / 'metrics.json').read_text())
    assert b['resumed_from_epoch'] == killed_at and a['resumed_from_epoch'] is None
    assert b['best_epoch'] == a['best_epoch']
    assert b['val'] == a['val'] and b['test'] == a['test']
    assert _strip(b['history']) == _strip(a['history'])
    return a, b, killed_at


@pytest.mark.parametrize('content', ['truncated', 'text'])
def test_damaged_checkpoint_message_has_no_raw_torch_text(content, finished, tmp_path, capsys):
    path = tmp_path / 'best.pt'
    good = (finished / 'best.pt').read_bytes()
    path.write_bytes(good[:len(good) // 2] if content == 'truncated' else b'hello world')
    code, _, err = run_cli(['evaluate', path, '--device', 'cpu'], capsys)
    assert_user_error(code, err, str(path), 'truncated, damaged', 'Fix:')
    assert 'miniz' not in err and 'PytorchStreamReader' not in err and '(101)' not in err


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


def test_checkpoint_of_an_older_version_is_evaluated_with_a_warning(own, tmp_path, capsys):
    _, run = own
    state = load_checkpoint(run / 'best.pt')
    del state['meta']['data']
    torch.save(state, tmp_path / 'best.pt')
    code, got, err = evaluate_json(capsys, tmp_path / 'best.pt')
    assert code == 0, err
    assert 'warning: checkpoint' in err and 'older version' in err
    assert got['metrics'] == pytest.approx(metrics_of(run)['test'])


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / 'last.pt'
    save_checkpoint({'epoch': 1, 'w': torch.ones(3)}, path)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', dying_save)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint({'epoch': 2, 'w': torch.zeros(3)}, path)
    monkeypatch.setattr(torch, 'save', real_save)
    state = load_checkpoint(path)  # the previous checkpoint, whole
    assert state['epoch'] == 1 and torch.equal(state['w'], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ['last.pt']


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pt'):
        load_checkpoint(tmp_path / 'nothing.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='junk.pt'):
        load_checkpoint(tmp_path / 'junk.pt')


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    save_checkpoint({'rng': rng_state()}, tmp_path / 'r.pt')
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    set_rng_state(load_checkpoint(tmp_path / 'r.pt')['rng'])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert got[2] == want[2]


@pytest.mark.slow
def test_killed_training_process_resumes_to_the_uninterrupted_metrics(tmp_path):
    """Two real ``mmssl-pyg train`` processes with the same seed: one runs through, the other
    is SIGKILLed once its first checkpoint exists and is then resumed with ``--resume``."""
    data = write_json_dataset(tmp_path / 'tiny', num_users=300, num_items=200, per_user=12)
    from mmssl_pyg.data import load_dataset
    load_dataset(str(data))  # process once here, so the two processes do not race on it
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'mmssl_pyg.cli', 'train', '--model', 'lightgcn',
           '--dataset', str(data), '--epochs', '6', '--seed', '3', '--wandb', 'disabled',
           '--device', 'cpu',  # bitwise reproducible kernels
           '--no-progress', 'num_threads=1', 'embedding_dim=16', 'num_layers=2',
           'batch_size=16']
    _kill_and_resume(cmd, tmp_path, env, epochs=6)


@pytest.mark.slow
def test_killed_mmssl_run_resumes_to_the_uninterrupted_run(tmp_path):
    """The same for MMSSL on the bundled sample: its resumed state includes the generated
    modality graphs, the critic and its Adam moments, and every noise stream (dropout, Gumbel
    noise, the gradient penalty's alpha). Metrics, history and final weights match exactly."""
    from mmssl_pyg.data import load_dataset
    load_dataset('tiktok-mini')  # processed once here, not by two processes at once
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'mmssl_pyg.cli', 'train', '--model', 'mmssl',
           '--dataset', 'tiktok-mini', '--epochs', '4', '--seed', '5', '--wandb', 'disabled',
           '--device', 'cpu', '--no-progress', 'num_threads=1', 'batch_size=128',
           'batches_per_epoch=2']
    a, _, _ = _kill_and_resume(cmd, tmp_path, env, epochs=4, timeout=120)
    assert len(a['history']) == 4 and a['history'][0]['train/critic_gradient_penalty'] > 0
    full, cut = (load_checkpoint(tmp_path / d / 'last.pt') for d in ('full', 'cut'))
    assert full['epoch'] == cut['epoch'] == 4
    extra = full['model']['_extra_state']
    assert extra['has_generated'].any()  # graphs were generated and carried over
    for key, value in full['model'].items():
        if torch.is_tensor(value):
            assert torch.equal(value, cut['model'][key]), key
    for m, n in zip(extra['neighbours'], cut['model']['_extra_state']['neighbours']):
        assert torch.equal(m, n)
    critic_a, critic_b = full['critic_optimizer']['state'], cut['critic_optimizer']['state']
    assert critic_a.keys() == critic_b.keys() and critic_a
    for k in critic_a:
        assert torch.equal(critic_a[k]['exp_avg_sq'], critic_b[k]['exp_avg_sq'])


def test_load_checkpoint_messages_in_full(tmp_path):
    from mmssl_pyg.training.checkpoint import CheckpointError
    fix = ("use the run's other checkpoint (best.pt / last.pt) or train again; only files "
           "written by mmssl-pyg train are read")
    missing = tmp_path / 'nothing.pt'
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(missing)
    assert str(err.value) == f'checkpoint {str(missing)!r} does not exist'
    folder = tmp_path / 'run'
    folder.mkdir()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert str(err.value) == (f'checkpoint {str(folder)!r} is not a file. Fix: give best.pt, '
                              f'last.pt or the run folder')
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(empty)
    assert str(err.value) == (f'checkpoint {str(empty)!r} is empty (0 bytes; an interrupted '
                              f'copy or a full disk?). Fix: {fix}')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(junk)
    assert str(err.value).startswith(f'cannot read checkpoint {str(junk)!r}: ')
    assert str(err.value).endswith(f'. Fix: {fix}')
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's text hidden
    tensor = tmp_path / 'tensor.pt'
    torch.save(torch.ones(2), tensor)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tensor)
    assert str(err.value) == (f'checkpoint {str(tensor)!r} holds a Tensor, not the dictionary '
                              f'mmssl-pyg writes. Fix: {fix}')
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)


def test_save_checkpoint_returns_the_path_and_loads_back_on_the_cpu(tmp_path):
    path = tmp_path / 'state.pt'
    state = {'epoch': 3, 'weights': {'w': torch.arange(4.0)}, 'names': ['a', 'b']}
    assert save_checkpoint(state, path) == path
    got = load_checkpoint(str(path))
    assert got['epoch'] == 3 and got['names'] == ['a', 'b']
    assert torch.equal(got['weights']['w'], torch.arange(4.0))
    assert got['weights']['w'].device == torch.device('cpu')


def test_rng_state_keeps_the_cached_gaussians_of_numpy_and_python(tmp_path):
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # numpy's legacy generator draws two and caches the second
    random.gauss(0.0, 1.0)        # so does Python's
    state = rng_state()
    assert state['numpy']['has_gauss'] == 1 and isinstance(state['python'], list)
    save_checkpoint({'rng': state}, tmp_path / 'r.pt')
    want = np.random.standard_normal(), random.gauss(0.0, 1.0), np.random.randint(1 << 30)
    np.random.seed(4)
    random.seed(4)
    set_rng_state(load_checkpoint(tmp_path / 'r.pt')['rng'])
    assert (np.random.standard_normal(), random.gauss(0.0, 1.0),
            np.random.randint(1 << 30)) == want
