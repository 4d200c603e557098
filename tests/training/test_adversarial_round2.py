"""Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from _adversarial import FAST, REPO, assert_user_error, copy_mini, run_cli, tree
from test_training_utils import write_json_dataset

from mmssl_pyg.models import get_model_class
from mmssl_pyg.training.options import ConfigError
from mmssl_pyg.training.presets import resolve_options
from mmssl_pyg.utils.io import FolderLock, FolderLockedError

OLD_RUN = {name: f'old {name}'.encode() for name in
           ('best.pt', 'last.pt', 'metrics.json', 'config.yaml')}


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


@pytest.fixture(scope='module')
def mini(tmp_path_factory) -> Path:
    """A private copy of tiktok-mini (image and audio features)."""
    return copy_mini(tmp_path_factory.mktemp('mini'))


def old_run(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in OLD_RUN.items():
        (folder / name).write_bytes(content)
    return folder


MMSSL = ['--model', 'mmssl', '--epochs', '1', '--wandb', 'disabled', '--no-progress',
         '--device', 'cpu', 'num_threads=1', 'embedding_dim=8']
#: Options every earlier check accepts but a model constructor refuses.
REFUSED_BY_THE_MODEL = {
    'mmssl-ablation': (MMSSL + ['ablation=bogus'], 'mini', 'ablation'),
    'mmssl-critic-memory': (MMSSL + ['max_critic_memory=1', 'batch_size=512'], 'mini',
                            'max_critic_memory'),
    'mmssl-on-id-only-data': (MMSSL, 'tiny', 'modalities'),
    'vbpr-on-id-only-data': (FAST + ['--model', 'vbpr'], 'tiny', 'modalities'),
    'lattice-on-id-only-data': (FAST + ['--model', 'lattice'], 'tiny', 'modalities'),
    'mmgcn-on-id-only-data': (FAST + ['--model', 'mmgcn'], 'tiny', 'modalities'),
}


# --------------------------------------------------------------------------------------------
# reproduction 1: --force replaces a run only once the new one is known to start


@pytest.mark.parametrize('case', list(REFUSED_BY_THE_MODEL))
def test_force_keeps_the_old_run_when_the_model_refuses(case, tiny, mini, tmp_path, capsys):
    argv, data, needle = REFUSED_BY_THE_MODEL[case]
    run = old_run(tmp_path / 'run')
    code, _, err = run_cli(['train', '--dataset', {'tiny': tiny, 'mini': mini}[data],
                            '--run-dir', run, '--force', *argv], capsys)
    assert_user_error(code, err, needle)
    assert tree(run) == OLD_RUN  # best.pt, last.pt, metrics.json, config.yaml all kept


@pytest.mark.parametrize('case', list(REFUSED_BY_THE_MODEL))
def test_model_refusal_leaves_no_new_run_folder(case, tiny, mini, tmp_path, capsys):
    argv, data, needle = REFUSED_BY_THE_MODEL[case]
    run = tmp_path / 'new' / 'run'
    code, _, err = run_cli(['train', '--dataset', {'tiny': tiny, 'mini': mini}[data],
                            '--run-dir', run, *argv], capsys)
    assert_user_error(code, err, needle)
    assert not run.exists()


def test_force_still_replaces_a_run_when_the_new_one_starts(tiny, tmp_path, capsys):
    run = old_run(tmp_path / 'run')
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, '--force', *FAST,
                            '--epochs', '1'], capsys)
    assert code == 0, err
    assert all((run / n).read_bytes() != c for n, c in OLD_RUN.items())


def test_a_run_that_fails_before_writing_removes_the_folder_it_created(tiny, tmp_path, capsys,
                                                                        monkeypatch):
    from mmssl_pyg.training import run as run_module

    def no_tracker(*args, **kwargs):
        raise RuntimeError('tracker refused')

    monkeypatch.setattr(run_module, 'make_tracker', no_tracker)
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, 'tracker refused')
    assert not run.exists()


# --------------------------------------------------------------------------------------------
# reproduction 5: the lock is taken atomically, even when a stale lock is replaced


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


# --------------------------------------------------------------------------------------------
# key=value: a number is the number typed


@pytest.mark.parametrize('override, key, expected', [
    ('patience=010', 'patience', 10),
    ('seed=0123', 'seed', 123),
    ('epochs=08', 'epochs', 8),
    ('ks=010,020', 'ks', (10, 20)),
    ('eval_batch_size=0o17', 'eval_batch_size', 15),
])
def test_key_value_numbers_are_read_as_typed(override, key, expected):
    options = resolve_options(get_model_class('lightgcn'), 'x', model_name='lightgcn',
                              overrides=[override])
    assert getattr(options.train, key) == expected


@pytest.mark.parametrize('override', ['eval_batch_size=1:30', 'patience=1:00', 'seed=1:2:3'])
def test_sexagesimal_numbers_are_refused(override):
    with pytest.raises(ConfigError, match=override.split('=')[0]):
        resolve_options(get_model_class('lightgcn'), 'x', model_name='lightgcn',
                        overrides=[override])


def test_config_file_numbers_are_read_as_typed(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('train:\n  patience: 010\n  seed: 0123\n')
    options = resolve_options(get_model_class('lightgcn'), 'x', model_name='lightgcn',
                              config_file=cfg)
    assert (options.train.patience, options.train.seed) == (10, 123)


def test_key_value_octal_reaches_the_run_record(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, *FAST, '--epochs',
                            '1', 'patience=010'], capsys)
    assert code == 0, err
    assert json.loads((run / 'metrics.json').read_text())['train']['patience'] == 10


# --------------------------------------------------------------------------------------------
# options silently ignored


def test_empty_run_dir_is_refused(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', '', *FAST], capsys)
    assert_user_error(code, err, '--run-dir', 'empty')
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_root_with_a_dataset_folder_is_refused(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    code, _, err = run_cli(['train', '--dataset', tiny, '--root', tmp_path / 'elsewhere',
                            '--run-dir', run, *FAST], capsys)
    assert_user_error(code, err, '--root', 'is a folder', 'Fix:')
    assert not run.exists()


def test_resumed_early_stopped_run_with_more_patience_trains_on(tiny, tmp_path, capsys):
    run = tmp_path / 'run'
    # lr so small that the ranking never changes: no improvement after epoch 1
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', run, *FAST, '--epochs',
                            '8', 'patience=1', 'lr=1e-30'], capsys)
    assert code == 0, err
    first = json.loads((run / 'metrics.json').read_text())
    assert first['stopped_early'] and first['epochs_run'] == 2
    code, _, err = run_cli(['train', '--resume', '--run-dir', run, '--no-progress',
                            'patience=3'], capsys)
    assert code == 0, err
    after = json.loads((run / 'metrics.json').read_text())
    assert after['train']['patience'] == 3
    assert after['epochs_run'] > 2, 'the new patience was recorded but nothing was trained'


@pytest.fixture(scope='module')
def finished(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp('finished') / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(tiny), '--run-dir', str(run), *FAST,
                     '--epochs', '1']) == 0
    return run


def test_evaluate_on_a_run_without_best_pt_names_last_pt(finished, tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    for name in ('last.pt', 'config.yaml'):
        (run / name).write_bytes((finished / name).read_bytes())
    code, out, err = run_cli(['evaluate', run, '--device', 'cpu'], capsys)
    assert_user_error(code, err, 'best.pt', 'last.pt', 'Fix:')
    code, out, err = run_cli(['evaluate', run / 'last.pt', '--device', 'cpu'], capsys)
    assert code == 0, err


def test_evaluate_leaves_no_tmp_files(finished, capsys):
    before = tree(finished)
    code, _, err = run_cli(['evaluate', finished, '--device', 'cpu'], capsys)
    assert code == 0, err
    assert not [p for p in finished.rglob('*.tmp')]
    assert tree(finished) == before


# --------------------------------------------------------------------------------------------
# the Python API checks its arguments like the command line


@pytest.fixture(scope='module')
def model_and_graph(tiny):
    from mmssl_pyg.training.run import load_graph
    graph = load_graph(str(tiny))
    return get_model_class('lightgcn')(graph, embedding_dim=8), graph


@pytest.mark.parametrize('users', [[-1], [0, -5], [10**6]])
def test_model_recommend_refuses_user_ids_out_of_range(users, model_and_graph):
    model, _ = model_and_graph
    with pytest.raises(ValueError, match='out of range'):
        model.recommend(torch.tensor(users), k=5)


@pytest.mark.parametrize('k', [0, 10**6])
def test_model_recommend_refuses_k_out_of_range(k, model_and_graph):
    model, _ = model_and_graph
    with pytest.raises(ValueError, match='number of items'):
        model.recommend(torch.tensor([0]), k=k)


@pytest.mark.parametrize('ks', [(10**6,), (0,), (-3,), (1.5,)])
def test_evaluate_refuses_cutoffs_out_of_range(ks, model_and_graph):
    from mmssl_pyg.training.evaluator import evaluate
    model, graph = model_and_graph
    with pytest.raises(ConfigError, match='ks'):
        evaluate(model, graph, 'val', ks=ks)


def test_evaluate_checkpoint_refuses_cutoffs_beyond_the_items(finished):
    from mmssl_pyg.training.run import evaluate_checkpoint
    with pytest.raises(ConfigError, match='exceed the number of items'):
        evaluate_checkpoint(finished, ks=(10**6,), device='cpu')


def test_trainer_refuses_a_model_built_on_another_graph(model_and_graph, tmp_path):
    from mmssl_pyg.training import Trainer
    from mmssl_pyg.training.run import load_graph
    model, _ = model_and_graph
    other = load_graph(str(write_json_dataset(tmp_path / 'other', num_users=40, num_items=60,
                                              per_user=6, seed=1)))
    with pytest.raises(ValueError, match='built on another graph'):
        Trainer(model, other)


# --------------------------------------------------------------------------------------------
# leftovers outside the run folder


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


# --------------------------------------------------------------------------------------------
# reproduction 4: tune never replaces a preset without --force, and a study refuses other data
# or other fixed options

ONE_EPOCH = ['epochs=1', 'batch_size=64', 'batches_per_epoch=1', 'patience=0',
             'num_threads=1']


def _tune(data, tmp_path, **kw):
    from mmssl_pyg.training.tune import tune
    pytest.importorskip('optuna')
    args = dict(trials=1, run_dir=tmp_path / 'study', overrides=ONE_EPOCH, device='cpu',
                wandb='disabled', preset_dir=tmp_path / 'presets', log=lambda line: None)
    args.update(kw)
    return tune('mf', str(data), **args)


def _preset(folder: Path, data: Path) -> Path:
    path = folder / f'mf-{data.name}.yaml'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('model: {}\ntrain: {}\n')
    return path


@pytest.mark.parametrize('where', ['package', 'preset-dir'])
def test_tune_refuses_to_replace_a_preset_without_force(where, tiny, tmp_path, monkeypatch,
                                                        capsys):
    from mmssl_pyg.training import presets as presets_mod
    folder = tmp_path / ('package-tuned' if where == 'package' else 'presets')
    monkeypatch.setattr(presets_mod, 'TUNED_DIR', folder)
    preset = _preset(folder, tiny)
    argv = ['tune', '--model', 'mf', '--dataset', tiny, '--trials', '1', '--run-dir',
            tmp_path / 'study', '--wandb', 'disabled', '--device', 'cpu', *ONE_EPOCH]
    if where == 'preset-dir':
        argv += ['--preset-dir', folder]
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, str(preset), 'already exists', '--force')
    assert preset.read_text() == 'model: {}\ntrain: {}\n'
    assert not (tmp_path / 'study').exists()  # refused before the study folder and database


def test_tune_force_replaces_the_preset(tiny, tmp_path):
    preset = _preset(tmp_path / 'presets', tiny)
    result = _tune(tiny, tmp_path, force=True)
    assert result.preset == preset and 'provenance' in preset.read_text()


def test_tune_refused_by_the_model_leaves_no_study(tiny, tmp_path, capsys):
    code, _, err = run_cli(['tune', '--model', 'vbpr', '--dataset', tiny, '--trials', '1',
                            '--run-dir', tmp_path / 'study', '--wandb', 'disabled',
                            *ONE_EPOCH], capsys)
    assert_user_error(code, err, 'modalities')
    assert not (tmp_path / 'study').exists()


def test_study_refuses_other_modalities(mini, tmp_path):
    _tune(mini, tmp_path, modalities=['image'], write_preset=False)
    with pytest.raises(ConfigError, match="modalities: study has \\['image'\\]"):
        _tune(mini, tmp_path, modalities=['image', 'audio'], trials=2, write_preset=False)


def test_study_refuses_other_data_behind_the_same_folder(tmp_path):
    data = write_json_dataset(tmp_path / 'data', num_users=40, num_items=60, per_user=6)
    _tune(data, tmp_path, write_preset=False)
    write_json_dataset(data, num_users=40, num_items=60, per_user=6, seed=7)
    with pytest.raises(ConfigError, match='digest'):
        _tune(data, tmp_path, trials=2, write_preset=False)


def test_study_refuses_a_changed_config_file(tiny, tmp_path):
    cfg = tmp_path / 'fixed.yaml'
    cfg.write_text('model:\n  embedding_dim: 8\n')
    _tune(tiny, tmp_path, config_file=cfg, write_preset=False)
    cfg.write_text('model:\n  embedding_dim: 16\n')
    with pytest.raises(ConfigError, match='model.embedding_dim: study has 8, asked 16'):
        _tune(tiny, tmp_path, config_file=cfg, trials=2, write_preset=False)


def test_study_continues_with_the_same_data_and_options(tiny, tmp_path):
    _tune(tiny, tmp_path, write_preset=False)
    result = _tune(tiny, tmp_path, trials=2, write_preset=False)
    assert result.counts['complete'] == 2


# --------------------------------------------------------------------------------------------
# refusals that name the file and the fix instead of a library's raw text


def test_config_file_not_utf8_names_the_file(tiny, tmp_path, capsys):
    cfg = tmp_path / 'bad.yaml'
    cfg.write_bytes(b'train:\n  lr: \xff\xfe\n')
    code, _, err = run_cli(['train', '--dataset', tiny, '--config', cfg, *FAST], capsys)
    assert_user_error(code, err, str(cfg), 'UTF-8', 'Fix:')


def test_config_file_nested_too_deeply_names_the_file(tiny, tmp_path, capsys):
    cfg = tmp_path / 'deep.yaml'
    cfg.write_text('[' * 50_000 + ']' * 50_000)
    code, _, err = run_cli(['train', '--dataset', tiny, '--config', cfg, *FAST], capsys)
    assert_user_error(code, err, str(cfg), 'nested too deeply', 'Fix:')


@pytest.mark.parametrize('make', ['folder', 'symlink-loop'])
def test_config_path_that_is_not_a_file_says_what_it_is(make, tiny, tmp_path, capsys):
    cfg = tmp_path / 'c.yaml'
    cfg.mkdir() if make == 'folder' else os.symlink(cfg, cfg)
    code, _, err = run_cli(['train', '--dataset', tiny, '--config', cfg, *FAST], capsys)
    assert_user_error(code, err, str(cfg), 'a folder' if make == 'folder' else 'symbolic link',
                      'Fix:')


@pytest.mark.parametrize('content', ['truncated', 'text'])
def test_damaged_checkpoint_message_has_no_raw_torch_text(content, finished, tmp_path, capsys):
    path = tmp_path / 'best.pt'
    good = (finished / 'best.pt').read_bytes()
    path.write_bytes(good[:len(good) // 2] if content == 'truncated' else b'hello world')
    code, _, err = run_cli(['evaluate', path, '--device', 'cpu'], capsys)
    assert_user_error(code, err, str(path), 'truncated, damaged', 'Fix:')
    assert 'miniz' not in err and 'PytorchStreamReader' not in err and '(101)' not in err


@pytest.mark.parametrize('error', [
    RuntimeError('[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough '
                  'memory: you tried to allocate 123456789012 bytes.'),
    torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB '
                           'total capacity; 77.00 GiB already allocated)'),
], ids=['cpu-allocator', 'cuda-allocator'])
def test_allocator_failure_is_one_line_with_a_fix(error, tiny, tmp_path, capsys, monkeypatch):
    from mmssl_pyg.training.trainer import Trainer

    def fit(self, resume=False, test=True):
        raise error

    monkeypatch.setattr(Trainer, 'fit', fit)
    code, _, err = run_cli(['train', '--dataset', tiny, '--run-dir', tmp_path / 'run', *FAST],
                           capsys)
    assert_user_error(code, err, 'out of memory', 'tried to allocate', 'batch_size', 'Fix:')
    assert 'enforce fail' not in err and 'MMSSL_PYG_DEBUG' not in err


def test_trainer_refuses_cutoffs_beyond_the_items_before_training(model_and_graph):
    from mmssl_pyg.training import TrainConfig, Trainer
    model, graph = model_and_graph
    with pytest.raises(ConfigError, match='exceed the number of items'):
        Trainer(model, graph, TrainConfig(ks=(20, 10**6)))


def test_tune_with_a_bad_storage_leaves_no_study_folder(tiny, tmp_path, capsys):
    code, _, err = run_cli(['tune', '--model', 'mf', '--dataset', tiny, '--trials', '1',
                            '--run-dir', tmp_path / 'study', '--storage', 'nosuchdb://x/y',
                            '--no-write', *ONE_EPOCH], capsys)
    assert_user_error(code, err, 'cannot open the study database')
    assert not (tmp_path / 'study').exists()


def test_tune_root_with_a_dataset_folder_is_refused(tiny, tmp_path, capsys):
    code, _, err = run_cli(['tune', '--model', 'mf', '--dataset', tiny, '--root', tmp_path,
                            '--trials', '1', '--run-dir', tmp_path / 'study', '--no-write',
                            *ONE_EPOCH], capsys)
    assert_user_error(code, err, '--root', 'is a folder')
    assert not (tmp_path / 'study').exists()


@pytest.mark.parametrize('option', ['--run-dir', '--preset-dir'])
def test_tune_empty_folder_option_is_refused(option, tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ['tune', '--model', 'mf', '--dataset', tiny, '--trials', '1', '--wandb', 'disabled',
            *ONE_EPOCH]
    argv += [option, ''] + (['--run-dir', tmp_path / 'study'] if option != '--run-dir' else [])
    code, _, err = run_cli(argv, capsys)
    assert_user_error(code, err, option, 'empty')
    assert list(tmp_path.iterdir()) == []


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
