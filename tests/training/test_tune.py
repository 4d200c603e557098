"""Tests of ``mmssl_pyg/training/tune.py``.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

``mmssl-pyg tune``: search spaces, the Optuna study (resume after a kill), tuned presets."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState  # noqa: E402

from mmssl_pyg import cli
from mmssl_pyg.models import MODELS, LightGCN
from mmssl_pyg.testing import (
    STUDY_DEFAULTS,
    assert_user_error,
    copy_mini,
    run_cli,
    write_json_dataset,
)
from mmssl_pyg.training import Trainer, resolve_options
from mmssl_pyg.training import presets as presets_mod
from mmssl_pyg.training.checkpoint import load_checkpoint
from mmssl_pyg.training.options import ConfigError
from mmssl_pyg.training.presets import find_tuned_preset, read_yaml
from mmssl_pyg.training.search_space import (
    SearchParam,
    load_search_space,
    parse_search_space,
    split_sections,
    write_tuned_preset,
)
from mmssl_pyg.training.tune import tune


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


@pytest.fixture(scope='module')
def mini(tmp_path_factory) -> Path:
    """A private copy of tiktok-mini (image and audio features)."""
    return copy_mini(tmp_path_factory.mktemp('mini'))


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


optuna = pytest.importorskip('optuna')


ROOT = Path(__file__).resolve().parents[2]


#: Fixed options of the study tests: tiny epochs of MF on tiktok-mini (about 2 s a trial).
TINY = ['epochs=40', 'batch_size=128', 'batches_per_epoch=2', 'patience=0', 'num_threads=1']


@pytest.fixture(scope='module')
def mini_graph():
    from mmssl_pyg.training.run import load_graph
    return load_graph('tiktok-mini')


def _study(storage: str, name: str):
    return optuna.load_study(study_name=name, storage=storage)


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


def test_parse_search_space_kinds_dataset_blocks_and_routing():
    section = {
        'default': {
            'lr': {'low': '1e-4', 'high': 1.0e-2, 'log': True, 'source': 'paper'},
            'model.num_layers': {'low': 1, 'high': 4, 'source': 'paper'},
            'model.reg_weight': {'choices': [0.0, 1.0e-4], 'source': 'grid'},
            'embedding_dim': {'low': 16, 'high': 64, 'step': 16, 'source': 'mine'},
        },
        'tiktok': {'model.reg_weight': None,  # dropped on tiktok
                   'lr': {'low': 1.0e-3, 'high': 2.0e-3, 'type': 'float', 'source': 'x'}},
    }
    base = parse_search_space(section, 'amazon-baby', 'f.yaml', LightGCN, 'lightgcn')
    kinds = {p.name: (p.kind, p.low, p.high, p.log, p.step, p.choices) for p in base.params}
    assert kinds == {
        'lr': ('float', 1e-4, 1e-2, True, None, ()),
        'model.num_layers': ('int', 1, 4, False, None, ()),
        'model.reg_weight': ('categorical', None, None, False, None, (0.0, 1e-4)),
        'embedding_dim': ('int', 16, 64, False, 16, ()),
    }
    tik = parse_search_space(section, 'tiktok', 'f.yaml', LightGCN)
    assert tik.names == ['lr', 'model.num_layers', 'embedding_dim']
    assert (tik.params[0].low, tik.params[0].high) == (1e-3, 2e-3)
    # the ID-only copy of a dataset uses its block
    assert parse_search_space(section, 'tiktok-interactions', 'f', LightGCN).names == tik.names
    # suggestions route like overrides
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    pairs = tik.suggest(study.ask())
    opts = resolve_options(LightGCN, 'tiktok', overrides=pairs)
    values = dict(pairs)
    assert opts.train.lr == values['lr'] and 1e-3 <= values['lr'] <= 2e-3
    assert opts.model_kwargs['num_layers'] == values['model.num_layers']
    assert opts.model_kwargs['embedding_dim'] in (16, 32, 48, 64)
    assert split_sections(values, LightGCN) == {
        'model': {'num_layers': values['model.num_layers'],
                  'embedding_dim': values['embedding_dim']},
        'train': {'lr': values['lr']}}


@pytest.mark.parametrize('spec, message', [
    ({'low': 1, 'high': 2}, 'source is missing'),
    ({'low': 2.0, 'high': 1.0, 'source': 's'}, 'low must be below high'),
    ({'low': 0.0, 'high': 1.0, 'log': True, 'source': 's'}, 'log range needs low > 0'),
    ({'low': 1, 'high': 2, 'source': 's', 'typo': 1}, r"unknown field\(s\) \['typo'\]"),
    ({'choices': [1, 2], 'low': 1, 'source': 's'}, 'choices cannot be combined'),
    ({'choices': [[0.1, 0.2]], 'source': 's'}, 'are not numbers'),
    ({'choices': [], 'source': 's'}, 'non-empty list'),
    ({'low': 'abc', 'high': 1.0, 'source': 's'}, 'must be a number'),
    ({'low': 1.0e-4, 'high': 1.0, 'log': True, 'step': 0.1, 'source': 's'}, 'cannot be combined'),
    ({'low': 1, 'high': 4, 'type': 'int', 'step': 0.5, 'source': 's'}, 'integer'),
    ([1, 2], 'expected a mapping'),
])
def test_bad_search_entries_name_the_file_and_field(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_search_space({'default': {'lr': spec}}, 'tiktok', 'my.yaml', LightGCN)
    assert 'my.yaml: search.default.lr' in str(err.value)


def test_unknown_option_in_search_space():
    with pytest.raises(ConfigError, match=r"my.yaml: search parameter 'model.depth'.*unknown"):
        parse_search_space({'default': {'model.depth': {'low': 1, 'high': 3, 'source': 's'}}},
                           'tiktok', 'my.yaml', LightGCN)


def test_every_trainable_model_ships_a_valid_search_space():
    for name, cls in MODELS.items():
        if not cls.trainable:
            with pytest.raises(ConfigError, match='no hyper-parameters to tune'):
                tune(name, 'tiktok-mini', trials=1)
            continue
        for dataset in ('tiktok', 'tiktok-mini', 'amazon-baby-interactions'):
            space = load_search_space(name, dataset)
            assert space.params and all(len(p.source) > 10 for p in space.params), name
            assert 'lr' in space.names  # every model searches the same lr range
            # both ends of every range are valid options of the model and trainer
            for pick in (0, -1):
                point = [(p.name, p.choices[pick] if p.kind == 'categorical' else
                          (p.low, p.high)[pick]) for p in space.params]
                resolve_options(cls, dataset, model_name=name, overrides=point)
    lr = {load_search_space(n, 'tiktok').params[0] for n in MODELS if MODELS[n].trainable}
    assert len({(p.low, p.high, p.log) for p in lr}) == 1


def test_tuned_preset_round_trip_and_lookup(tmp_path, monkeypatch, capsys):
    prov = {'study': 's', 'metric': 'validation recall@20', 'best_value': 0.1}
    path = write_tuned_preset(tmp_path / 'lightgcn-tiktok.yaml', 'lightgcn', 'tiktok',
                              split_sections({'lr': 0.002, 'model.num_layers': 2}, LightGCN),
                              prov)
    text = path.read_text()
    assert text.startswith('# Tuned settings of lightgcn on tiktok')
    data = yaml.safe_load(text)
    assert data == {'provenance': prov, 'model': {'num_layers': 2}, 'train': {'lr': 0.002}}
    assert read_yaml(path) == data  # a valid --config file (provenance is allowed)
    monkeypatch.setattr(presets_mod, 'TUNED_DIR', tmp_path)
    opts = resolve_options(LightGCN, 'tiktok', model_name='lightgcn', tuned=True)
    assert opts.train.lr == 0.002 and opts.model_kwargs['num_layers'] == 2
    assert opts.sources['train.lr'] == f'tuned preset {path}'
    # not tuned: the preset's default block (PROTOCOL.md Sec. 8)
    assert opts.model_kwargs['reg_weight'] == STUDY_DEFAULTS['lightgcn'][0]['reg_weight']
    assert opts.sources['model.reg_weight'] == 'preset lightgcn.yaml (model.default)'
    # the preset's dataset block still applies under the tuned values; overrides win over both
    opts = resolve_options(LightGCN, 'tiktok', model_name='lightgcn', tuned=True,
                           overrides=['lr=0.005'])
    assert opts.train.lr == 0.005
    assert find_tuned_preset('lightgcn', 'tiktok-interactions') == path
    with pytest.raises(ConfigError, match=r'no tuned preset for lightgcn on amazon-baby.*'
                                          r'mmssl-pyg tune --model lightgcn'):
        resolve_options(LightGCN, 'amazon-baby', model_name='lightgcn', tuned=True)
    # the CLI applies it with --tuned (and says what to do when there is none)
    write_tuned_preset(tmp_path / 'lightgcn-tiktok-mini.yaml', 'lightgcn', 'tiktok-mini',
                       {'model': {'num_layers': 1}, 'train': {'lr': 0.003}}, prov)
    out = tmp_path / 'run'
    assert cli.main(['train', '--model', 'lightgcn', '--dataset', 'tiktok-mini', '--tuned',
                     '--run-dir', str(out), '--epochs', '1', '--wandb', 'disabled',
                     '--no-progress', 'batch_size=128', 'batches_per_epoch=1']) == 0
    saved = yaml.safe_load((out / 'config.yaml').read_text())
    assert saved['train']['lr'] == 0.003 and saved['model_kwargs']['num_layers'] == 1
    assert cli.main(['train', '--model', 'mf', '--dataset', 'tiktok-mini', '--tuned']) == 2
    assert 'no tuned preset for mf on tiktok-mini' in capsys.readouterr().err


def test_search_param_to_dict_round_trips():
    p = SearchParam('lr', 'float', 'paper', 1e-4, 1e-2, True)
    assert p.to_dict() == {'type': 'float', 'low': 1e-4, 'high': 1e-2, 'log': True,
                           'source': 'paper'}
    space = parse_search_space({'default': {'lr': p.to_dict()}}, 'x', 'f', LightGCN)
    assert space.params == [p]


def test_search_space_asks_the_trial_for_each_kind_and_range_in_order():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    from mmssl_pyg.training.search_space import SearchSpace
    space = SearchSpace('m', 'd', [
        SearchParam('lr', 'float', 'p', 1e-4, 1e-2, True),
        SearchParam('n', 'int', 'p', 1, 4),
        SearchParam('k', 'int', 'p', 2, 8, step=2),
        SearchParam('m', 'int', 'p', 1, 64, True),
        SearchParam('w', 'float', 'p', 0.0, 1.0, step=0.25),
        SearchParam('c', 'categorical', 'p', choices=(None, 'a'))])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    values = space.suggest(trial)
    assert [n for n, _ in values] == space.names == ['lr', 'n', 'k', 'm', 'w', 'c']
    assert dict(values) == trial.params
    assert trial.distributions == {
        'lr': FloatDistribution(1e-4, 1e-2, log=True), 'n': IntDistribution(1, 4),
        'k': IntDistribution(2, 8, step=2), 'm': IntDistribution(1, 64, log=True),
        'w': FloatDistribution(0.0, 1.0, step=0.25),
        'c': CategoricalDistribution((None, 'a'))}
    assert space.to_dict() == {
        'lr': {'type': 'float', 'low': 1e-4, 'high': 1e-2, 'log': True, 'source': 'p'},
        'n': {'type': 'int', 'low': 1, 'high': 4, 'source': 'p'},
        'k': {'type': 'int', 'low': 2, 'high': 8, 'step': 2, 'source': 'p'},
        'm': {'type': 'int', 'low': 1, 'high': 64, 'log': True, 'source': 'p'},
        'w': {'type': 'float', 'low': 0.0, 'high': 1.0, 'step': 0.25, 'source': 'p'},
        'c': {'choices': [None, 'a'], 'source': 'p'}}


def test_split_sections_routes_by_the_models_own_options():
    from mmssl_pyg.models import BM3
    # BM3 takes batch_size itself (pairs per step when it samples interactions), as the
    # trainer does: both get it
    assert split_sections({'batch_size': 512, 'lr': 0.1, 'embedding_dim': 8}, BM3) == {
        'model': {'batch_size': 512, 'embedding_dim': 8},
        'train': {'batch_size': 512, 'lr': 0.1}}
    with pytest.raises(ConfigError, match=r"^unknown option 'depth'; model options: "):
        split_sections({'depth': 2}, LightGCN)


def test_tuned_preset_folders_are_created_and_long_values_fold_past_100_columns(tmp_path):
    note = 'abc' + ' abcdefghi' * 20  # its 10th word ends at column 101 of the line
    path = write_tuned_preset(tmp_path / 'a' / 'b' / 't.yaml', 'lightgcn', 'tiktok',
                              {'model': {}, 'train': {'lr': 0.1}}, {'note': note})
    assert yaml.safe_load(path.read_text()) == {'provenance': {'note': note}, 'model': {},
                                                'train': {'lr': 0.1}}
    # a line is folded at the first space after it passes 100 columns
    nine, ten = (' '.join(['abcdefghi'] * n) for n in (9, 10))
    assert path.read_text().splitlines()[4:] == [
        'provenance:', f'  note: abc {nine}', f'    {ten}', '    abcdefghi', 'model: {}',
        'train:', '  lr: 0.1']


def test_trial_tracker_reports_every_epoch_and_prunes(mini_graph):
    """The trainer's per-epoch validation metric reaches Optuna; a pruner stops the trial."""
    from mmssl_pyg.training.tracking import MemoryTracker
    from mmssl_pyg.training.tune import _TrialTracker
    study = optuna.create_study(direction='maximize',
                                pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    seen = {}

    def objective(trial):
        opts = resolve_options(MODELS['mf'], 'tiktok-mini', model_name='mf',
                               overrides=TINY + ['epochs=5'])
        inner = MemoryTracker()
        tracker = _TrialTracker(inner, trial, 'val/recall@20', None)
        seen['inner'] = inner
        Trainer(MODELS['mf'](mini_graph), mini_graph, opts.train, tracker=tracker).fit(
            test=False)
        return 1.0

    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED  # recall < 0.5 after epoch 1
    assert trial.user_attrs['pruned_at_epoch'] == 1
    assert trial.intermediate_values == {1: seen['inner'].history[0][1]['val/recall@20']}


def test_budget_stops_the_running_trial(mini_graph):
    from mmssl_pyg.training.tracking import NullTracker
    from mmssl_pyg.training.tune import _TrialTracker
    study = optuna.create_study(direction='maximize')
    trial = study.ask()
    opts = resolve_options(MODELS['mf'], 'tiktok-mini', model_name='mf', overrides=TINY)
    tracker = _TrialTracker(NullTracker(), trial, 'val/recall@20', budget=0.0)
    trainer = Trainer(MODELS['mf'](mini_graph), mini_graph, opts.train, tracker=tracker)
    tracker.trainer = trainer
    fit = trainer.fit(test=False)
    assert len(fit.history) == 1 and tracker.cut_at == 1 and fit.test == {}


def _has_heartbeat(run_dir: Path, trial) -> bool:
    import sqlite3
    with sqlite3.connect(run_dir / 'study.db') as db:
        return bool(db.execute('select count(*) from trial_heartbeats where trial_id = ?',
                               (trial._trial_id,)).fetchone()[0])


def _wait_until_stale(run_dir: Path, grace: int = 1, timeout: float = 30.0) -> None:
    """Wait until every stored heartbeat is older than ``grace`` seconds by the database's own
    clock. SQLite's ``CURRENT_TIMESTAMP`` (what optuna stores and compares) has one-second
    resolution, so a fixed sleep of 1.5 s can leave a difference of exactly ``grace``, which
    optuna does not count as stale: a race seen once in CI."""
    import sqlite3
    deadline = time.time() + timeout
    while True:
        with sqlite3.connect(run_dir / 'study.db') as db:
            age = db.execute("select min(strftime('%s', current_timestamp) - "
                             "strftime('%s', heartbeat)) from trial_heartbeats").fetchone()[0]
        if age is not None and age > grace:
            return
        assert time.time() < deadline, f'heartbeats still {age} s old after {timeout} s'
        time.sleep(0.1)


def _kill_when(proc, ready, timeout: float = 60.0) -> None:
    """SIGKILL ``proc`` once ``ready()`` says so (or it exits, or ``timeout`` passes)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_study_resumes_after_a_kill(tmp_path, monkeypatch):
    """A real ``mmssl-pyg tune`` process is killed in its second trial; a new process (here:
    in-process) continues the same SQLite study: the first trial is kept, the killed one is
    marked failed and rerun with its parameters, and the study stops at --trials finished."""
    run_dir, presets = tmp_path / 'study', tmp_path / 'presets'
    storage = f'sqlite:///{run_dir / "study.db"}'
    name = 'mf-tiktok-mini'
    cmd = [sys.executable, '-m', 'mmssl_pyg.cli', 'tune', '--model', 'mf', '--dataset',
           'tiktok-mini', '--trials', '2', '--run-dir', str(run_dir), '--preset-dir',
           str(presets), '--wandb', 'disabled', '--device', 'cpu', *TINY]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:  # wait for the first finished trial
            lines.append(line)
            if 'trial 0:' in line:
                break
        assert 'COMPLETE' in lines[-1], ''.join(lines)
        # then kill it once trial 1 has reported an epoch and its first heartbeat is stored
        # (optuna only fails a stale trial that has a heartbeat; killed before it, the trial
        # would stay RUNNING: a race seen once in CI)
        def ready():
            running = [t for t in _study(storage, name).trials if t.state == TrialState.RUNNING]
            return bool(running and running[0].intermediate_values and
                        _has_heartbeat(run_dir, running[0]))

        _kill_when(proc, ready)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = _study(storage, name).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert not presets.exists()  # killed before writing anything
    first, killed = before
    _wait_until_stale(run_dir)  # the killed trial's heartbeat is older than the grace

    def no_test(self):  # selection never reads the test split
        raise AssertionError('the test split was evaluated during tuning')

    monkeypatch.setattr(Trainer, '_test_best', no_test)
    logged = []
    result = tune('mf', 'tiktok-mini', trials=2, storage=storage, run_dir=run_dir,
                  overrides=TINY, device='cpu', wandb='offline', preset_dir=presets,
                  heartbeat_interval=1, grace_period=1, log=logged.append)
    after = _study(storage, name).trials
    assert after[0].number == first.number and after[0].value == first.value
    assert after[0].params == first.params  # the first trial is kept as it was
    assert after[1].state == TrialState.FAIL  # the killed one
    assert [t.state for t in after[2:]] == [TrialState.COMPLETE]  # its rerun, same parameters
    assert after[2].params == killed.params
    assert result.counts == {'complete': 2, 'pruned': 0, 'failed': 1, 'running': 0,
                             'waiting': 0}
    assert result.stopped_by == 'trials'
    best = max((t for t in after if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert (result.best_trial, result.best_value) == (best.number, best.value)
    # progress: one line per trial of this process, plus start and end lines
    trial_lines = [x for x in logged if '] trial ' in x]
    assert len(trial_lines) == 1 and 'trial 2: COMPLETE' in trial_lines[0]
    assert '2/2 finished' in trial_lines[0]
    # wandb: one offline run for the trial this process ran, with its per-epoch validation
    from mmssl_pyg.testing import read_wandb_file
    runs = list((run_dir / 'wandb').glob('offline-run-*/run-*.wandb'))
    assert len(runs) == 1
    rec = read_wandb_file(runs[0])
    assert rec['config']['trial'] == 2 and rec['config']['study'] == name
    assert len([h for h in rec['history'] if 'val/recall@20' in h]) == 40
    # the tuned preset: best parameters and provenance
    data = yaml.safe_load((presets / 'mf-tiktok-mini.yaml').read_text())
    assert data['train'] == {'lr': best.params['lr']}
    assert data['model'] == {'reg_weight': best.params['model.reg_weight']}
    prov = data['provenance']
    assert prov['study'] == name and prov['best_trial'] == best.number
    assert prov['best_value'] == best.value and prov['metric'] == 'validation recall@20'
    assert prov['trials'] == {'complete': 2, 'pruned': 0, 'failed': 1, 'target': 2}
    assert prov['fixed'] == TINY and set(prov['search_space']) == {'lr', 'model.reg_weight'}
    assert len(prov['commit']) >= 7 and prov['date'].endswith('UTC')
    # reached: a third process runs nothing; another search in the same study is refused
    again = tune('mf', 'tiktok-mini', trials=2, storage=storage, run_dir=run_dir,
                 overrides=TINY, wandb='disabled', write_preset=False, log=logged.append)
    assert again.counts == result.counts and 'nothing to run' in logged[-2]
    with pytest.raises(ConfigError, match='created for another search.*epochs=40'):
        tune('mf', 'tiktok-mini', trials=3, storage=storage, run_dir=run_dir,
             overrides=['epochs=3'], wandb='disabled', log=logged.append)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(['tune', '--model', 'pop', '--dataset', 'tiktok-mini', '--trials', '1']) == 2
    assert 'no hyper-parameters to tune' in capsys.readouterr().err
    assert cli.main(['tune', '--model', 'mf', '--dataset', 'tiktok-mini', '--trials', '0']) == 2
    assert '--trials must be a positive integer' in capsys.readouterr().err
    assert cli.main(['tune', '--model', 'mf', '--dataset', 'tiktok-mini', '--trials', '1',
                     '--run-dir', str(tmp_path), '--storage', 'nosuchdb://x/y']) == 2
    assert 'cannot open the study database' in capsys.readouterr().err
    assert cli.main(['tune', '--model', 'mf', '--dataset', 'tiktok-mini', '--trials', '1',
                     '--run-dir', str(tmp_path), 'lr=0.1']) == 2
    assert "['lr'] are searched" in capsys.readouterr().err


def test_sampler_and_pruner_settings_are_applied_recorded_and_part_of_the_identity(tmp_path):
    run_dir = tmp_path / 'study'
    settings = {'startup_trials': 1, 'multivariate': True, 'prune_percentile': 25.0,
                'prune_warmup': 7, 'prune_startup': 3}
    # the settings, not the training, are under test: one short epoch a trial
    result = tune('mf', 'tiktok-mini', trials=2, run_dir=run_dir, overrides=ONE_EPOCH,
                  wandb='disabled', preset_dir=tmp_path, log=lambda line: None, **settings)
    study = _study(result.storage, result.study_name)
    identity = study.user_attrs['identity']
    assert identity['sampler'] == 'TPESampler(n_startup_trials=1, multivariate=True)'
    # Optuna's percentile is the share kept: pruning below the 25th percentile keeps the top 75%
    assert identity['pruner'] == ('optuna PercentilePruner(percentile=75, n_startup_trials=3, '
                                  'n_warmup_steps=7): prunes below the 25th percentile')
    provenance = read_yaml(tmp_path / 'mf-tiktok-mini.yaml')['provenance']
    assert provenance['sampler'].startswith('TPESampler(n_startup_trials=1, multivariate=True, '
                                            'seed=')
    assert provenance['pruner'] == identity['pruner']
    assert result.counts['complete'] + result.counts['pruned'] == 2
    for changed in ({'multivariate': False}, {'startup_trials': 10}, {'prune_percentile': 50.0},
                    {'prune_warmup': 5}):
        with pytest.raises(ConfigError, match='created for another search'):
            tune('mf', 'tiktok-mini', trials=3, run_dir=run_dir, overrides=ONE_EPOCH,
                 wandb='disabled', write_preset=False, log=lambda line: None,
                 **{**settings, **changed})


@pytest.mark.parametrize('bad, message', [
    ({'startup_trials': -1}, '--startup-trials must be a non-negative integer'),
    ({'prune_percentile': 0.0}, '--prune-percentile must be a number strictly between 0 and 100'),
    ({'prune_percentile': 100}, '--prune-percentile must be'),
    ({'prune_warmup': 1.5}, '--prune-warmup must be a non-negative integer'),
    ({'prune_startup': True}, '--prune-startup must be a non-negative integer'),
])
def test_bad_sampler_or_pruner_settings_are_refused_before_anything_is_written(tmp_path, bad,
                                                                                message):
    with pytest.raises(ConfigError, match=message):
        tune('mf', 'tiktok-mini', trials=1, run_dir=tmp_path / 'study', overrides=TINY,
             wandb='disabled', write_preset=False, **bad)
    assert not (tmp_path / 'study').exists()


@pytest.mark.parametrize('prune_percentile, pruned', [(25.0, False), (50.0, True), (75.0, True)])
def test_prune_percentile_is_the_share_of_earlier_trials_a_trial_must_beat(tmp_path,
                                                                           prune_percentile,
                                                                           pruned):
    """A trial at the 40th percentile of the earlier trials survives a 25th-percentile rule and
    is pruned by the median and 75th-percentile rules (Optuna counts the share kept instead)."""
    seen = {}

    import mmssl_pyg.training.tune as tune_mod
    real = optuna.pruners.PercentilePruner

    def capture(percentile, **kwargs):
        seen['pruner'] = real(percentile, **kwargs)
        return seen['pruner']

    monkey = pytest.MonkeyPatch()
    monkey.setattr(optuna.pruners, 'PercentilePruner', capture)
    try:
        tune_mod.tune('mf', 'tiktok-mini', trials=1, run_dir=tmp_path / 'study',
                      overrides=ONE_EPOCH, wandb='disabled', write_preset=False,
                      log=lambda line: None, prune_percentile=prune_percentile,
                      prune_startup=0, prune_warmup=0)
    finally:
        monkey.undo()
    study = optuna.create_study(direction='maximize', pruner=seen['pruner'])
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        t = study.ask()
        t.report(value, 1)
        study.tell(t, value)
    t = study.ask()
    t.report(0.45, 1)  # above 4 of the 10 earlier trials: their 40th percentile
    assert bool(t.should_prune()) is pruned


def test_a_killed_trial_resumes_from_its_checkpoint_with_the_uninterrupted_values(tmp_path):
    """``--trial-checkpoints``: a real ``mmssl-pyg tune`` process is killed in the middle of
    its MMSSL trial; the next process retries the trial from the dead one's last checkpoint,
    and the retry's per-epoch validation values, score and best epoch equal those of the same
    trial run in one go without checkpoints (the study's own trials before this option)."""
    opts = ['epochs=12', 'batch_size=128', 'batches_per_epoch=2', 'patience=0',
            'num_threads=1']
    name = 'mmssl-tiktok-mini'
    quiet = {'device': 'cpu', 'wandb': 'disabled', 'write_preset': False,
             'log': lambda _line: None}
    ref_dir = tmp_path / 'reference'
    tune('mmssl', 'tiktok-mini', trials=1, run_dir=ref_dir, overrides=opts, **quiet)
    (ref,) = _study(f'sqlite:///{ref_dir / "study.db"}', name).trials
    assert ref.state == TrialState.COMPLETE and sorted(ref.intermediate_values) == \
        list(range(1, 13))

    run_dir = tmp_path / 'study'
    storage = f'sqlite:///{run_dir / "study.db"}'
    cmd = [sys.executable, '-m', 'mmssl_pyg.cli', 'tune', '--model', 'mmssl', '--dataset',
           'tiktok-mini', '--trials', '1', '--run-dir', str(run_dir), '--no-write',
           '--trial-checkpoints', '--wandb', 'disabled', '--device', 'cpu', *opts]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run_dir / 'trials' / '0' / 'last.pt'
    def ready():  # it has saved epoch 3 or later, and its heartbeat is stored
        if not last.is_file() or load_checkpoint(last)['epoch'] < 3:
            return False
        return _has_heartbeat(run_dir, _study(storage, name).trials[0])

    try:
        _kill_when(proc, ready, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (dead,) = _study(storage, name).trials
    assert dead.state == TrialState.RUNNING  # killed, not finished
    saved = load_checkpoint(last)['epoch']
    assert 3 <= saved < 12 and max(dead.intermediate_values) >= saved
    _wait_until_stale(run_dir)  # its heartbeat is now older than the grace period

    result = tune('mmssl', 'tiktok-mini', trials=1, run_dir=run_dir, overrides=opts,
                  trial_checkpoints=True, heartbeat_interval=1, grace_period=1, **quiet)
    failed, retry = _study(storage, name).trials
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retry.params == ref.params  # both studies drew the same first point
    resumed = retry.user_attrs['resumed_from']
    assert (resumed['trial'], resumed['epoch']) == (0, saved)
    assert 0 < resumed['seconds'] < retry.user_attrs['seconds']  # counted in the trial's
    # this process trained only the epochs after the checkpoint, and the trial is the same
    assert retry.intermediate_values == ref.intermediate_values
    assert retry.value == ref.value and result.best_value == ref.value
    for key in ('best_epoch', 'epochs_run', 'val'):
        assert retry.user_attrs[key] == ref.user_attrs[key], key
    assert not (run_dir / 'trials').exists()  # a finished trial's checkpoints are removed


_RANGE = 'my.yaml: search.default.lr'


@pytest.mark.parametrize('spec, message', [
    ([1, 2], 'expected a mapping like {low: 1.0e-4, high: 1.0e-2, log: true, source: "..."} or '
             '{choices: [...], source: "..."}, got [1, 2]'),
    ({'low': 1, 'high': 2, 'source': 's', 'typo': 1, 'a': 2},
     ": unknown field(s) ['a', 'typo']; valid fields: low, high, log, step, choices, type, source"),
    ({'low': 1, 'high': 2}, ': source is missing; say where the range comes from (the paper\'s '
                            'searched range, a toolkit\'s grid, or "this library\'s choice: '
                            '<why>")'),
    ({'low': 1, 'high': 2, 'source': ' '}, ': source is missing; say where the range comes from '
                                           '(the paper\'s searched range, a toolkit\'s grid, or '
                                           '"this library\'s choice: <why>")'),
    ({'low': 1, 'high': 2, 'source': 's', 'type': 'str'}, ".type must be float or int, got 'str'"),
    ({'choices': [1], 'type': 'int', 'low': 1, 'source': 's'},
     ": choices cannot be combined with ['low', 'type']"),
    ({'choices': 3, 'source': 's'}, '.choices must be a non-empty list, got 3'),
    ({'choices': [], 'source': 's'}, '.choices must be a non-empty list, got []'),
    ({'choices': [1, [0.1], {}], 'source': 's'}, '.choices: [[0.1], {}] are not numbers, strings, '
                                                 'booleans or null (Optuna stores only those)'),
    ({'choices': [1, 'a', 1], 'source': 's'}, ".choices has duplicates: [1, 'a', 1]"),
    ({'low': 1, 'source': 's'}, ': give low and high (a range) or choices (a list)'),
    ({'high': 1, 'source': 's'}, ': give low and high (a range) or choices (a list)'),
    ({'low': 'abc', 'high': 1, 'source': 's'}, ".low must be a number, got 'abc'"),
    ({'low': True, 'high': 1, 'source': 's'}, '.low must be a number, got True'),
    ({'low': 0, 'high': None, 'source': 's'}, '.high must be a number, got None'),
    ({'low': 0, 'high': [1], 'source': 's'}, '.high must be a number, got [1]'),
    ({'low': 1, 'high': 2, 'log': 'yes', 'source': 's'}, ".log must be true or false, got 'yes'"),
    ({'low': 1, 'high': 2, 'step': 0, 'source': 's'}, '.step must be > 0, got 0'),
    ({'low': 1, 'high': 2, 'step': -0.5, 'source': 's'}, '.step must be > 0, got -0.5'),
    ({'low': 1, 'high': 2, 'step': 1, 'log': True, 'source': 's'},
     ': step and log cannot be combined (Optuna samples a log range continuously)'),
    ({'low': 1, 'high': 4, 'step': 0.5, 'type': 'int', 'source': 's'},
     ': an int range needs integer low/high/step, got 1, 4, 0.5'),
    ({'low': 1.5, 'high': 4, 'type': 'int', 'source': 's'},
     ': an int range needs integer low/high/step, got 1.5, 4, None'),
    ({'low': 2.0, 'high': 1.0, 'source': 's'}, ': low must be below high, got low=2.0, high=1.0'),
    ({'low': 1, 'high': 1, 'source': 's'}, ': low must be below high, got low=1, high=1'),
    ({'low': '-inf', 'high': 1.0, 'source': 's'}, ': low must be below high, got low=-inf, '
                                                  'high=1.0'),
    ({'low': 0.0, 'high': 1.0, 'log': True, 'source': 's'},
     ': a log range needs low > 0, got 0.0 (use choices to include 0)'),
])
def test_search_entry_messages_in_full(spec, message):
    with pytest.raises(ConfigError) as err:
        parse_search_space({'default': {'lr': spec}}, 'tiktok', 'my.yaml')
    assert str(err.value) == (f'{_RANGE}: {message}' if isinstance(spec, list) else
                              _RANGE + message)


def test_choices_refuse_every_range_field_by_name():
    from mmssl_pyg.training.search_space import parse_param
    spec = {'choices': [1, 2], 'low': 1, 'high': 2, 'log': True, 'step': 1, 'type': 'int',
            'source': 's'}
    with pytest.raises(ConfigError) as err:
        parse_param('lr', spec, 'my.yaml: search.default.lr')
    assert str(err.value) == ("my.yaml: search.default.lr: choices cannot be combined with "
                              "['high', 'log', 'low', 'step', 'type']")


def test_a_step_that_is_not_a_number_is_named_in_full():
    from mmssl_pyg.training.search_space import parse_param
    with pytest.raises(ConfigError) as err:
        parse_param('lr', {'low': 1, 'high': 4, 'step': 'one', 'source': 's'}, 'my.yaml: lr')
    assert str(err.value) == "my.yaml: lr.step must be a number, got 'one'"


def test_a_search_space_names_its_model_or_none():
    section = {'default': {'lr': {'low': 1e-4, 'high': 1e-2, 'source': 's'}}}
    assert parse_search_space(section, 'tiktok', 'my.yaml').model == ''
    named = parse_search_space(section, 'tiktok', 'my.yaml', LightGCN, 'lightgcn')
    assert (named.model, named.dataset, named.names) == ('lightgcn', 'tiktok', ['lr'])


def test_search_ranges_take_the_kind_of_their_bounds_and_strip_the_source():
    from mmssl_pyg.training.search_space import parse_param
    kinds = {name: parse_param(name, spec, 'w') for name, spec in (
        ('i', {'low': 1, 'high': 4, 'source': ' paper '}),
        ('f', {'low': 1, 'high': 4, 'step': 0.5, 'source': 's'}),     # a float step: float
        ('t', {'low': 1, 'high': 4, 'type': 'float', 'source': 's'}),
        ('n', {'low': 1.0, 'high': 4.0, 'step': 1.0, 'type': 'int', 'source': 's'}),
        ('g', {'low': '1e-4', 'high': 1, 'log': True, 'source': 's'}),  # YAML 1.1's string
        ('c', {'choices': [None, True, 1, 1.0, 'a'], 'source': 's'}))}  # distinct by repr
    got = {n: (p.kind, p.low, p.high, p.log, p.step, p.choices, p.source) for n, p in kinds.items()}
    assert got == {'i': ('int', 1, 4, False, None, (), 'paper'),
                   'f': ('float', 1.0, 4.0, False, 0.5, (), 's'),
                   't': ('float', 1.0, 4.0, False, None, (), 's'),
                   'n': ('int', 1, 4, False, 1, (), 's'),
                   'g': ('float', 1e-4, 1.0, True, None, (), 's'),
                   'c': ('categorical', None, None, False, None, (None, True, 1, 1.0, 'a'), 's')}
    assert [type(v) for v in (kinds['i'].low, kinds['t'].low, kinds['n'].step)] == \
        [int, float, int]


def test_search_space_section_and_file_messages_in_full(tmp_path):
    for section, message in (
            ([1], 'my.yaml: search: must be a mapping with a default: block'),
            ({'default': {}, 'tiktok': [1]},
             'my.yaml: search.tiktok must be a mapping of option names to ranges, got list')):
        with pytest.raises(ConfigError) as err:
            parse_search_space(section, 'tiktok', 'my.yaml')
        assert str(err.value) == message
    assert parse_search_space(None, 'tiktok', 'my.yaml', LightGCN, 'lgcn').params == []
    # the default block alone when the dataset is named 'default'
    one = {'default': {'lr': {'low': 1, 'high': 2, 'source': 's'}}}
    assert parse_search_space(one, 'default', 'f').names == ['lr']
    with pytest.raises(ConfigError) as err:
        load_search_space('lightgcn', 'tiktok', tmp_path / 'none.yaml')
    assert str(err.value) == (f"lightgcn has no preset file {tmp_path / 'none.yaml'}, so no "
                              f'search space; add a search: section there')
    preset = tmp_path / 'p.yaml'
    preset.write_text('model:\n  default: {num_layers: 1}\n')
    with pytest.raises(ConfigError) as err:
        load_search_space('LightGCN', 'tiktok', preset)
    assert str(err.value) == (f'{preset}: no search space for LightGCN on tiktok; add a search: '
                              f'section with a default: block (see mmssl_pyg/training/tune.py)')
    preset.write_text('search:\n  default:\n    lr: {low: 0.1, high: 0.2, source: s}\n')
    space = load_search_space('LightGCN', 'tiktok', preset)
    assert (space.model, space.dataset, space.path, space.names) == \
        ('lightgcn', 'tiktok', preset, ['lr'])


def test_a_preset_file_search_space_is_checked_against_the_model_and_named(tmp_path):
    preset = tmp_path / 'p.yaml'
    preset.write_text('search:\n  default:\n    model.depth: {low: 1, high: 3, source: s}\n')
    with pytest.raises(ConfigError) as err:
        load_search_space('lightgcn', 'tiktok', preset)
    assert str(err.value) == (f"{preset}: search parameter 'model.depth': model.depth: unknown "
                              f"model option 'depth'; valid model options: embedding_dim, "
                              f"num_layers, reg_weight")
    preset.write_text('search:\n  default:\n    depth: {low: 1, high: 3, source: s}\n')
    with pytest.raises(ConfigError) as err:
        load_search_space('lightgcn', 'tiktok', preset)
    assert str(err.value).startswith(
        f"{preset}: search parameter 'depth': unknown option 'depth'; model options: "
        f"embedding_dim, num_layers, reg_weight; train options: batch_size, ")
    preset.write_text('search:\n  default:\n    lr: {low: 1, source: s}\n')
    with pytest.raises(ConfigError) as err:
        load_search_space('lightgcn', 'tiktok', preset)
    assert str(err.value) == (f'{preset}: search.default.lr: give low and high (a range) or '
                              f'choices (a list)')


def test_a_null_entry_removes_a_default_only_from_a_dataset_block():
    lr = {'low': 0.1, 'high': 0.2, 'source': 's'}
    section = {'default': {'lr': lr, 'n': lr}, 'tiktok': {'n': None, 'not_searched': None}}
    assert parse_search_space(section, 'tiktok', 'my.yaml').names == ['lr']
    # in the default block itself it is an error, also when the block asked for is 'default'
    for dataset in ('amazon-baby', 'default'):
        with pytest.raises(ConfigError) as err:
            parse_search_space({'default': {'lr': None}}, dataset, 'my.yaml')
        assert str(err.value) == (
            'my.yaml: search.default.lr: expected a mapping like {low: 1.0e-4, high: 1.0e-2, '
            'log: true, source: "..."} or {choices: [...], source: "..."}, got None')


def test_tuned_preset_text_in_full_and_the_provenance_helpers(tmp_path, monkeypatch):
    import re

    from mmssl_pyg.training import search_space
    path = write_tuned_preset(tmp_path / 'new' / 't.yaml', 'lightgcn', 'tiktok',
                              {'model': {'num_layers': 2}},
                              {'study': 's', 'metric': 'validation recall@20', 'note': 'é'})
    assert path == tmp_path / 'new' / 't.yaml' and sorted(os.listdir(path.parent)) == ['t.yaml']
    assert path.read_text(encoding='utf-8') == (
        "# Tuned settings of lightgcn on tiktok, written by `mmssl-pyg tune`: the best trial of "
        "study\n# 's', selected on validation recall@20 only (the test split was never "
        "evaluated).\n# Use: mmssl-pyg train --model lightgcn --dataset tiktok --tuned\n"
        "# Regenerate by rerunning the study rather than editing by hand.\n"
        "provenance:\n  study: s\n  metric: validation recall@20\n  note: é\n"
        "model:\n  num_layers: 2\ntrain: {}\n")
    assert search_space._hide_password('postgresql://me:pa:ss@host/db') == \
        'postgresql://me:***@host/db'
    assert search_space._hide_password('sqlite:///x.db') == 'sqlite:///x.db'
    assert re.fullmatch(r'[0-9a-f]{40}(\+dirty)?', search_space._git_commit())
    monkeypatch.setattr(search_space.subprocess, 'run', lambda *a, **k: type(
        'Done', (), {'returncode': 128, 'stdout': ''})())
    assert search_space._git_commit() == 'unknown (not a git checkout)'

    def fail(*args, **kwargs):
        raise OSError('no git')

    monkeypatch.setattr(search_space.subprocess, 'run', fail)
    assert search_space._git_commit() == 'unknown (git failed)'


def test_git_commit_asks_the_package_checkout_whatever_the_working_folder(tmp_path,
                                                                         monkeypatch):
    """A study records the commit of the package's checkout, not of the folder it runs from;
    git runs there, silently (output captured as text), at most 20 s per call."""
    from mmssl_pyg.training import search_space
    package = Path(search_space.__file__).resolve().parent
    monkeypatch.chdir(tmp_path)  # not a git checkout
    sha = subprocess.run(['git', '-C', str(package), 'rev-parse', 'HEAD'], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(['git', '-C', str(package), 'status', '--porcelain'],
                           capture_output=True, text=True).stdout.strip()
    assert search_space._git_commit() == sha + ('+dirty' if dirty else '')
    for status, want in ((' M x.py\n', 'abc123+dirty'), ('\n', 'abc123')):
        calls = []

        def git(args, status=status, calls=calls, **kwargs):
            calls.append((args, kwargs))
            out = {'rev-parse': 'abc123\n', 'status': status}[args[1]]
            return subprocess.CompletedProcess(args, 0, stdout=out, stderr='')

        monkeypatch.setattr(search_space.subprocess, 'run', git)
        assert search_space._git_commit() == want
        quiet = {'cwd': package, 'capture_output': True, 'text': True, 'timeout': 20}
        assert calls == [(['git', 'rev-parse', 'HEAD'], quiet),
                         (['git', 'status', '--porcelain'], quiet)]
    for error in (subprocess.TimeoutExpired(['git'], 20), subprocess.SubprocessError('x')):
        def hangs_or_fails(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(search_space.subprocess, 'run', hangs_or_fails)
        assert search_space._git_commit() == 'unknown (git failed)'
