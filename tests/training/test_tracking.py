"""Tests of ``mmssl_pyg/training/tracking.py``.

Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused.

wandb offline logging, read back from the run's ``.wandb`` file (no network)."""
from __future__ import annotations

import json

import pytest

from mmssl_pyg import cli
from mmssl_pyg.testing import assert_user_error, read_wandb_file, run_cli, write_json_dataset
from mmssl_pyg.training import NullTracker, make_tracker

pytest.importorskip('wandb')


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ('WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR', 'WANDB_DATA_DIR'):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv('WANDB_MODE', raising=False)
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.setenv('WANDB_SILENT', 'true')


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


@pytest.fixture
def netrc(tmp_path, monkeypatch):
    """No W&B login in the environment; ``$NETRC`` is a file with an api.wandb.ai entry."""
    monkeypatch.delenv('WANDB_API_KEY', raising=False)
    monkeypatch.delenv('WANDB_IDENTITY_TOKEN_FILE', raising=False)
    monkeypatch.delenv('WANDB_BASE_URL', raising=False)
    path = tmp_path / 'netrc'
    path.write_text('machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n')
    path.chmod(0o600)
    monkeypatch.setenv('NETRC', str(path))
    return path


def test_wandb_login_is_found_in_netrc_or_the_environment(netrc, monkeypatch):
    from mmssl_pyg.training.tracking import wandb_login_found
    assert wandb_login_found()
    netrc.write_text('machine other.example\n  login user\n  password x\n')
    assert not wandb_login_found()
    monkeypatch.setenv('WANDB_API_KEY', 'k' * 40)
    assert wandb_login_found()


# Seeds of the run: the default (2023, best epoch 2 of 2), 3 (best epoch 1 of 2: the last
# history row is not the selected one) and 11.
@pytest.mark.parametrize('seed', [None, 3, 11])
def test_offline_run_logs_config_epochs_and_test_summary(tmp_path, wandb_env, seed):
    data = write_json_dataset(tmp_path / 'tiny', num_users=60, num_items=60, per_user=8)
    run = tmp_path / 'run'
    argv = ['train', '--model', 'lightgcn', '--dataset', str(data), '--epochs', '2',
            '--run-dir', str(run), '--no-progress', 'num_threads=1', 'embedding_dim=8',
            'batch_size=32',  # --wandb defaults to offline
            # the options the seeds were picked for (not the preset's, which may change)
            'lr=0.001', 'reg_weight=0.0001', 'num_layers=3']
    if seed is not None:
        argv[1:1] = ['--seed', str(seed)]
    assert cli.main(argv) == 0
    # run.finish() can return before wandb-core has flushed the offline .wandb file; teardown
    # (what wandb's atexit hook does when the CLI process exits) waits for it.
    import wandb
    wandb.teardown()
    files = list((run / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 1
    logged = read_wandb_file(files[0])
    metrics = json.loads((run / 'metrics.json').read_text())

    assert logged['run'].display_name == 'run'
    cfg = logged['config']
    assert cfg['model'] == 'lightgcn' and cfg['dataset'] == str(data)
    assert cfg['model_kwargs']['embedding_dim'] == 8 and cfg['train']['batch_size'] == 32

    steps = [h for h in logged['history'] if 'train/loss' in h]
    assert [h['_step'] for h in steps] == [1, 2]
    for h, want in zip(steps, metrics['history']):
        for key in ('train/loss', 'train/bpr', 'train/reg', 'val/recall@20', 'val/ndcg@50',
                    'epoch_seconds', 'eval_seconds', 'peak_memory_mb'):
            assert h[key] == pytest.approx(want[key]), key

    # the summary holds the selected epoch's validation metrics (from its history row) and
    # the test metrics, also when a later epoch was logged after it
    summary = logged['summary']
    best = metrics['best_epoch']
    if seed == 3:  # the precondition this seed is here for
        assert best < len(steps)
        assert steps[-1]['val/recall@20'] != steps[best - 1]['val/recall@20']
    assert summary['best_epoch'] == best
    for k, v in metrics['test'].items():
        assert summary[f'test/{k}'] == pytest.approx(v)
    selected = steps[best - 1]
    val_keys = [k for k in selected if k.startswith('val/')]
    assert len(val_keys) == 12  # recall, precision, ndcg, hit at 10, 20 and 50
    for k in val_keys:
        assert summary[k] == pytest.approx(selected[k]), k
        assert summary[k] == pytest.approx(metrics['val'][k[4:]]), k
    # config.yaml records the id, so --resume continues the same wandb run
    assert f'wandb_id: {logged["run"].run_id}' in (run / 'config.yaml').read_text()


def test_disabled_mode_uses_the_null_tracker(tmp_path):
    assert isinstance(make_tracker('disabled', dir=tmp_path), NullTracker)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match='--wandb must be one of'):
        make_tracker('sometimes')


def test_memory_tracker_keeps_what_was_logged_and_is_finished_by_finish_only():
    from mmssl_pyg.training import MemoryTracker
    tracker = MemoryTracker()
    assert (tracker.config, tracker.history, tracker.summary_) == ({}, [], {})
    assert tracker.finished is False
    tracker.log_config({'lr': 0.1})
    tracker.log_config({'seed': 3})
    metrics = {'loss': 1.5}
    tracker.log(metrics, step=1)
    metrics['loss'] = 0.0  # the tracker keeps a copy
    tracker.summary({'test/recall@20': 0.25})
    assert tracker.finished is False
    tracker.finish()
    assert tracker.config == {'lr': 0.1, 'seed': 3}
    assert tracker.history == [(1, {'loss': 1.5})]
    assert tracker.summary_ == {'test/recall@20': 0.25}
    assert tracker.finished is True


def test_wandb_login_from_an_identity_token_or_the_netrc_entry_of_a_custom_host(
        netrc, tmp_path, monkeypatch):
    from mmssl_pyg.training.tracking import wandb_login_found
    # a self-hosted server: only its own host's entry counts
    monkeypatch.setenv('WANDB_BASE_URL', 'https://wandb.example.org')
    assert not wandb_login_found()
    netrc.write_text('machine wandb.example.org\n  login user\n  password 0123456789abcdef\n')
    assert wandb_login_found()
    netrc.write_text('')
    assert not wandb_login_found()
    monkeypatch.setenv('WANDB_IDENTITY_TOKEN_FILE', str(tmp_path / 'token'))
    assert wandb_login_found()


def test_wandb_tracker_logs_an_offline_run_with_its_project_name_config_and_steps(tmp_path,
                                                                                   wandb_env):
    import wandb

    from mmssl_pyg.testing import read_wandb_file
    from mmssl_pyg.training.tracking import WandbTracker
    out = tmp_path / 'a' / 'b'  # created when missing
    tracker = WandbTracker(dir=out, name='first', config={'lr': 0.5})
    assert tracker.mode == 'offline' and out.is_dir()
    tracker.log_config({'seed': 3, 'epochs': 5})
    tracker.log_config({'epochs': 8})  # a resumed run logs its options again, changed
    tracker.log({'loss': 1.5}, step=1)
    tracker.log({'loss': 0.5}, step=2)
    tracker.summary({'best_epoch': 2})
    run_id = tracker.run_id
    tracker.finish()
    wandb.teardown()
    files = list((out / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(files) == 1 and files[0].name == f'run-{run_id}.wandb'
    logged = read_wandb_file(files[0])
    assert (logged['run'].project, logged['run'].display_name) == ('mmssl-pyg', 'first')
    assert logged['config']['lr'] == 0.5 and logged['config']['seed'] == 3
    assert logged['config']['epochs'] == 8
    assert [(h['_step'], h['loss']) for h in logged['history'] if 'loss' in h] == \
        [(1, 1.5), (2, 0.5)]
    assert logged['summary']['best_epoch'] == 2


def test_wandb_tracker_starts_a_quiet_run_that_a_resume_continues(tmp_path, monkeypatch):
    import wandb

    from mmssl_pyg.training.tracking import TrackerError, WandbTracker
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        return type('Run', (), {'id': 'abc123'})()

    monkeypatch.setattr(wandb, 'init', init)
    assert WandbTracker('online', tmp_path, 'proj', 'name', {'a': 1}, tags=['x']).run_id == \
        'abc123'
    WandbTracker(run_id='abc123')
    first, resumed = calls
    settings = first.pop('settings')
    assert (settings.silent, settings.console) == (True, 'off')
    assert first == {'mode': 'online', 'dir': str(tmp_path), 'project': 'proj', 'name': 'name',
                     'config': {'a': 1}, 'id': None, 'resume': None, 'reinit': 'create_new',
                     'tags': ['x']}
    resumed.pop('settings')
    assert resumed == {'mode': 'offline', 'dir': None, 'project': 'mmssl-pyg', 'name': None,
                       'config': None, 'id': 'abc123', 'resume': 'allow',
                       'reinit': 'create_new'}

    def refuse(**kwargs):
        raise RuntimeError('no network')

    monkeypatch.setattr(wandb, 'init', refuse)
    with pytest.raises(TrackerError) as err:
        WandbTracker('online')
    assert str(err.value) == (
        'Weights & Biases could not start a online run (RuntimeError: no network). Fix: check '
        '`wandb login` and the network, or use --wandb offline (upload later with `wandb '
        'sync`) or --wandb disabled')
    assert err.value.__cause__ is None and err.value.__suppress_context__
    with pytest.raises(ValueError) as err:
        WandbTracker('sometimes')
    assert str(err.value) == ("wandb mode must be one of ('disabled', 'offline', 'online'), "
                              "got 'sometimes'")


def test_make_tracker_is_offline_by_default_and_wandb_for_every_mode_but_disabled(tmp_path,
                                                                                   monkeypatch):
    import wandb

    from mmssl_pyg.training.tracking import WandbTracker
    modes = []

    def init(**kwargs):
        modes.append(kwargs['mode'])
        return type('Run', (), {'id': 'abc123'})()

    monkeypatch.setattr(wandb, 'init', init)
    assert isinstance(make_tracker(dir=tmp_path), WandbTracker) and modes == ['offline']
    assert make_tracker('online', dir=tmp_path).mode == 'online' and modes[-1] == 'online'
    assert isinstance(make_tracker('disabled', dir=tmp_path), NullTracker) and len(modes) == 2
    with pytest.raises(ValueError) as err:
        make_tracker('sometimes')
    assert str(err.value) == "--wandb must be one of disabled, offline, online, got 'sometimes'"


def test_check_wandb_mode_messages_in_full(netrc, monkeypatch):
    from mmssl_pyg.training.tracking import TrackerError, check_wandb_mode
    for mode in ('disabled', 'offline', 'online'):  # online: the netrc holds a login
        check_wandb_mode(mode)
    netrc.write_text('')
    check_wandb_mode('offline')
    with pytest.raises(TrackerError) as err:
        check_wandb_mode('online')
    assert str(err.value) == (
        '--wandb online needs a Weights & Biases login, and none was found (no WANDB_API_KEY, '
        'no .netrc entry for the W&B host). Fix: run `wandb login` (or set WANDB_API_KEY), or '
        'use --wandb offline and upload later with `wandb sync`')
    with pytest.raises(ValueError) as err:
        check_wandb_mode('sometimes')
    assert str(err.value) == "--wandb must be one of disabled, offline, online, got 'sometimes'"


def test_budget_tracker_forwards_everything_and_stops_the_trainer_past_its_budget(monkeypatch):
    from types import SimpleNamespace

    import mmssl_pyg.training.tracking as tracking
    from mmssl_pyg.training import MemoryTracker
    now = [100.0]
    monkeypatch.setattr(tracking, 'time', SimpleNamespace(perf_counter=lambda: now[0]))
    inner = MemoryTracker()
    budget = tracking.BudgetTracker(inner, seconds=10)
    budget.log_config({'lr': 0.1})
    budget.log({'loss': 1.0}, step=1)   # no trainer yet: nothing to stop
    budget.trainer = trainer = SimpleNamespace(stopped_early=False)
    for step, t in ((2, 105.0), (3, 110.0)):  # up to the budget (10 s) exactly: runs on
        now[0] = t
        budget.log({'loss': 0.5}, step=step)
        assert budget.cut_at is None and not trainer.stopped_early
    now[0] = 110.5
    budget.log({'loss': 0.25}, step=4)
    assert budget.cut_at == 4 and trainer.stopped_early
    now[0] = 200.0
    budget.log({'loss': 0.2}, step=5)
    assert budget.cut_at == 4  # the first epoch past the budget
    budget.summary({'best_epoch': 3})
    budget.finish()
    assert inner.config == {'lr': 0.1} and inner.summary_ == {'best_epoch': 3} and inner.finished
    assert inner.history == [(1, {'loss': 1.0}), (2, {'loss': 0.5}), (3, {'loss': 0.5}),
                             (4, {'loss': 0.25}), (5, {'loss': 0.2})]
    orphan = tracking.BudgetTracker(MemoryTracker(), seconds=1)  # no trainer set: no stop
    now[0] = 1e9
    orphan.log({}, step=1)
    assert orphan.cut_at is None and orphan.trainer is None
    unlimited = tracking.BudgetTracker(MemoryTracker(), seconds=None)
    unlimited.trainer = SimpleNamespace(stopped_early=False)
    now[0] = 1e9
    unlimited.log({}, step=1)
    assert unlimited.cut_at is None and not unlimited.trainer.stopped_early
