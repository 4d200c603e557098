"""Fast unit tests of ``mmssl_pyg/training/tune.py``'s helpers and :class:`_Search`'s stages.

``test_tune.py`` runs real studies (tiny trainings, killed processes); these check each helper
alone on in-memory Optuna studies and hand-made trials, with the expected values written out
(issue 27: mutmut runs a function's fastest tests first, so these decide most mutants in
seconds instead of the minute or two of a study)."""
from __future__ import annotations

import datetime
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmssl_pyg.models import MODELS
from mmssl_pyg.training import tune as tune_mod
from mmssl_pyg.training.checkpoint import LAST, save_checkpoint
from mmssl_pyg.training.options import ConfigError
from mmssl_pyg.training.tune import (
    TuneOptions,
    TuneResult,
    _check_identity,
    _check_preset_target,
    _check_search_settings,
    _counts,
    _data_and_options,
    _difference,
    _fmt,
    _plain,
    _remove_checkpoints,
    _Search,
    _take_over_checkpoints,
    _trial_outcome,
    _TrialTracker,
    spent_seconds,
)

optuna = pytest.importorskip('optuna')
from optuna.trial import TrialState, create_trial  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study():
    return optuna.create_study(direction='maximize')


def _frozen(state, value=None, **user_attrs):
    return create_trial(state=state, value=value, user_attrs=user_attrs)


# ---------------------------------------------------------------------------------------------
# small helpers


def test_fmt_and_plain():
    assert _fmt(0.000123456) == '0.0001235'
    assert _fmt(12345.678) == '1.235e+04'
    assert _fmt(3) == '3' and _fmt('adam') == 'adam' and _fmt(True) == 'True'
    assert _plain({1: (2, [3, (4,)]), 'a': {'b': (5,)}, 'c': 'x'}) == \
        {'1': [2, [3, [4]]], 'a': {'b': [5]}, 'c': 'x'}
    assert _plain((1, {'k': (2,)})) == [1, {'k': [2]}]
    assert _plain(7) == 7 and _plain(None) is None


def test_counts_and_spent_seconds_of_every_state():
    study = _study()
    study.add_trial(_frozen(TrialState.COMPLETE, 0.5, seconds=1.5))
    study.add_trial(_frozen(TrialState.PRUNED, seconds=2.25))
    study.add_trial(_frozen(TrialState.COMPLETE, 0.25))  # no seconds recorded: counts 0
    study.add_trial(_frozen(TrialState.FAIL, seconds=100.0))  # a dead trial's time: not counted
    study.ask()  # running
    study.enqueue_trial({})  # waiting
    counts = _counts(study)
    assert counts == {'complete': 2, 'pruned': 1, 'failed': 1, 'running': 1, 'waiting': 1}
    assert list(counts) == ['complete', 'pruned', 'failed', 'running', 'waiting']
    spent = spent_seconds(study)
    assert spent == 3.75 and isinstance(spent, float)
    empty = _study()
    assert _counts(empty) == dict.fromkeys(counts, 0)
    assert spent_seconds(empty) == 0.0 and isinstance(spent_seconds(empty), float)


def test_trial_outcome_of_each_state():
    metric = 'recall@20'
    done = _frozen(TrialState.COMPLETE, 0.123456, best_epoch=7, epochs_run=12)
    assert _trial_outcome(done, metric) == 'COMPLETE val recall@20 0.1235 at epoch 7/12'
    cut = _frozen(TrialState.COMPLETE, 0.5, best_epoch=2, epochs_run=3, budget_cut_at_epoch=3)
    assert _trial_outcome(cut, 'ndcg@10') == \
        'COMPLETE val ndcg@10 0.5000 at epoch 2/3 (budget cut)'
    unrecorded = _frozen(TrialState.COMPLETE, 1.0, budget_cut_at_epoch=0)
    assert _trial_outcome(unrecorded, metric) == \
        'COMPLETE val recall@20 1.0000 at epoch None/None'
    assert _trial_outcome(_frozen(TrialState.PRUNED, pruned_at_epoch=5), metric) == \
        'PRUNED after epoch 5'
    diverged = _frozen(TrialState.PRUNED, pruned_at_epoch=5, diverged='loss is nan')
    assert _trial_outcome(diverged, metric) == 'PRUNED (diverged)'
    assert _trial_outcome(_frozen(TrialState.FAIL), metric) == 'FAIL'


def test_check_search_settings_and_options_check_messages_in_full():
    _check_search_settings(0, 0.5, 0, 0)
    _check_search_settings(3, 99.5, 2, 1)
    _check_search_settings(3, 50, 2, 1)  # an int percentile is a number
    cases = [((-1, 50.0, 0, 0), "--startup-trials must be a non-negative integer, got -1"),
             ((True, 50.0, 0, 0), "--startup-trials must be a non-negative integer, got True"),
             ((2.0, 50.0, 0, 0), "--startup-trials must be a non-negative integer, got 2.0"),
             ((0, 50.0, -2, 0), "--prune-warmup must be a non-negative integer, got -2"),
             ((0, 50.0, False, 0), "--prune-warmup must be a non-negative integer, got False"),
             ((0, 50.0, 0, '1'), "--prune-startup must be a non-negative integer, got '1'"),
             ((0, 50.0, 0, -1), "--prune-startup must be a non-negative integer, got -1")]
    pct = '--prune-percentile must be a number strictly between 0 and 100, got '
    cases += [((0, 0, 0, 0), pct + '0'), ((0, 100.0, 0, 0), pct + '100.0'),
              ((0, -5.0, 0, 0), pct + '-5.0'), ((0, True, 0, 0), pct + 'True'),
              ((0, '50', 0, 0), pct + "'50'"), ((0, None, 0, 0), pct + 'None')]
    for args, message in cases:
        with pytest.raises(ConfigError) as err:
            _check_search_settings(*args)
        assert str(err.value) == message, args
    TuneOptions('mf', 'd', trials=1, timeout=0.5).check()
    TuneOptions('mf', 'd', trials=2).check()
    for fields, message in [
            ({'trials': 0}, '--trials must be a positive integer, got 0'),
            ({'trials': 2.0}, '--trials must be a positive integer, got 2.0'),
            ({'trials': 1, 'timeout': 0}, '--timeout must be a positive number of seconds, got 0'),
            ({'trials': 1, 'timeout': -3.0},
             '--timeout must be a positive number of seconds, got -3.0'),
            ({'trials': 1, 'prune_warmup': -1},
             '--prune-warmup must be a non-negative integer, got -1')]:
        with pytest.raises(ConfigError) as err:
            TuneOptions('mf', 'd', **fields).check()
        assert str(err.value) == message


def test_tune_options_documented_defaults():
    o = TuneOptions('mf', 'd', 3)
    assert (o.model, o.dataset, o.trials, o.timeout, o.storage, o.study_name, o.seed) == \
        ('mf', 'd', 3, None, None, None, 0)
    assert (o.wandb, o.prune, o.runs_root, o.write_preset, o.force) == \
        ('offline', True, 'runs', True, False)
    assert (o.heartbeat_interval, o.grace_period, o.startup_trials, o.multivariate) == \
        (60, 180, 10, False)
    assert (o.prune_percentile, o.prune_warmup, o.prune_startup, o.trial_checkpoints) == \
        (50.0, 5, 5, False)


def test_optuna_missing_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, 'optuna', None)
    with pytest.raises(ImportError) as err:
        tune_mod._optuna()
    assert str(err.value) == ('mmssl-pyg tune needs Optuna, which is not installed. Run `pip '
                              'install "mmssl-pyg[tune]"` (or `pip install optuna`).')
    assert err.value.__cause__ is None and err.value.__suppress_context__
    monkeypatch.undo()
    assert tune_mod._optuna() is optuna


# ---------------------------------------------------------------------------------------------
# the study's identity


def test_difference_names_the_changed_leaves_only():
    old = {'digest': 'abcdef0123456789', 'modalities': ['image']}
    assert _difference('data', old, {'digest': 'fedcba9876543210', 'modalities': ('image',)}) \
        == ('data: the study scored data with digest abcdef012345, the data found now has '
            'fedcba987654 (other content behind the same name)')
    assert _difference('data', old, {'digest': 'abcdef0123456789', 'modalities': ['audio']}) \
        == "modalities: study has ['image'], asked ['audio']"
    assert _difference('data', old, {'digest': None, 'modalities': []}) == (
        'data: the study scored data with digest abcdef012345, the data found now has None '
        "(other content behind the same name); modalities: study has ['image'], asked []")
    assert _difference('data', None, old) == \
        "data: study has None, asked {'digest': 'abcdef0123456789', 'modalities': ['image']}"
    assert _difference('data', old, 'x') == f"data: study has {old!r}, asked 'x'"
    options_old = {'model': {'a': 1, 'c': (1, 2)}, 'train': {'lr': 0.1}}
    options_new = {'model': {'a': 2, 'b': 3, 'c': [1, 2]}, 'train': None}
    assert _difference('options', options_old, options_new) == (
        'fixed options differ: model.a: study has 1, asked 2, model.b: study has None, asked 3, '
        'train.lr: study has 0.1, asked None')
    assert _difference('options', {}, {'train': {'x': 'y'}}) == \
        "fixed options differ: train.x: study has None, asked 'y'"
    assert _difference('options', [1], {'model': {}}) == \
        "options: study has [1], asked {'model': {}}"
    assert _difference('options', {'model': {}}, None) == \
        "options: study has {'model': {}}, asked None"
    assert _difference('metric', 'val/a', 'val/b') == "metric: study has 'val/a', asked 'val/b'"


def _identity(**changes):
    identity = {'data': {'digest': 'd1', 'modalities': ('image',)},
                'options': {'model': {'a': 1}, 'train': {'lr': 0.1}},
                'model': 'mf', 'metric': 'val/recall@20'}
    identity.update(changes)
    return identity


def test_check_identity_stores_continues_and_refuses_in_full():
    study = _study()
    url = 'postgresql://user:secret@host/db'
    listed = _identity(data={'digest': 'd1', 'modalities': ['image']})
    _check_identity(study, listed, 'mf-d', url)
    assert study.user_attrs['identity'] == listed
    _check_identity(study, _identity(), 'mf-d', url)  # the same search: tuples == lists
    with pytest.raises(ConfigError) as err:
        _check_identity(study, _identity(metric='val/ndcg@20'), 'mf-d', url)
    assert str(err.value) == (
        "study 'mf-d' in postgresql://user:***@host/db was created for another search (metric: "
        "study has 'val/recall@20', asked 'val/ndcg@20'). Fix: continue it with the same data "
        "and settings, or start a new study with --study-name or --storage.")
    with pytest.raises(ConfigError) as err:
        _check_identity(study, _identity(model='lightgcn', data={'digest': 'd2',
                                                                 'modalities': ['image']}),
                        'mf-d', 'sqlite:///s.db')
    assert str(err.value) == (
        "study 'mf-d' in sqlite:///s.db was created for another search (data: the study scored "
        'data with digest d1, the data found now has d2 (other content behind the same name); '
        "model: study has 'mf', asked 'lightgcn'). Fix: continue it with the same data and "
        'settings, or start a new study with --study-name or --storage.')
    # a key only the study has is not compared; a long difference is cut at 1,500 characters
    _check_identity(study, {k: v for k, v in _identity().items() if k != 'model'}, 'mf-d', url)
    with pytest.raises(ConfigError) as err:
        _check_identity(study, _identity(metric='x' * 3000), 'n', 'sqlite://')
    detail = str(err.value).split('another search (')[1].split('). Fix:')[0]
    assert detail == ("metric: study has 'val/recall@20', asked '" + 'x' * 3000)[:1500]


def test_check_identity_of_an_older_study_warns_and_checks_the_rest():
    study = _study()
    study.set_user_attr('identity', {'model': 'mf', 'metric': 'val/recall@20'})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        _check_identity(study, _identity(), 'old', 'sqlite://')
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "study 'old' was created by an older version that did not record its "
                      'data and options; they are not checked')]
    assert study.user_attrs['identity'] == {'model': 'mf', 'metric': 'val/recall@20'}
    study.set_user_attr('identity', {'model': 'mf', 'metric': 'val/recall@20',
                                     'data': {'digest': 'd1', 'modalities': ['image']}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(ConfigError, match=r"\(model: study has 'mf', asked 'vbpr'\)"):
            _check_identity(study, _identity(model='vbpr'), 'old', 'sqlite://')
    assert [str(w.message) for w in caught] == [
        "study 'old' was created by an older version that did not record its options; they "
        'are not checked']
    # an empty stored identity counts as none: the new one is stored
    study.set_user_attr('identity', {})
    _check_identity(study, _identity(), 'old', 'sqlite://')
    assert study.user_attrs['identity'] == _identity()


def test_data_and_options_leave_out_searched_and_non_result_options():
    options = SimpleNamespace(
        train=SimpleNamespace(to_dict=lambda: {'lr': 0.1, 'epochs': 5, 'progress': True,
                                               'device': 'cpu', 'num_threads': 1,
                                               'eval_batch_size': 64, 'ks': (10, 20)}),
        model_kwargs={'emb_dim': 8, 'reg_weight': 0.5, 'sizes': (1, 2)})
    out = _data_and_options({'digest': 'abc', 'modalities': ('image', 'text'), 'other': 1},
                            options, ['lr', 'reg_weight'])
    assert out == {'data': {'digest': 'abc', 'modalities': ['image', 'text']},
                   'options': {'model': {'emb_dim': 8, 'sizes': [1, 2]},
                               'train': {'epochs': 5, 'ks': [10, 20]}}}
    assert type(out['data']['modalities']) is list


def test_check_preset_target_message_in_full(tmp_path):
    path = tmp_path / 'mf-d.yaml'
    _check_preset_target(path, False)  # no file: nothing to refuse
    fix = ('; nothing was run. Fix: pass --force to replace it, --preset-dir DIR to write it '
           'elsewhere, or --no-write')
    for text, what in [
            ("provenance: {study: s1, best_value: 0.25, date: '2026-01-02'}\n",
             " (study 's1', best 0.25, 2026-01-02)"),
            ('provenance: {study: s1}\n', " (study 's1', best None, None)"),
            ('provenance: {}\nmodel: {}\n', ''), ('model: {}\n', ''), ('', ''),
            ('provenance: [1, 2]\n', ''), ('- a list\n', ''), ('a: [unclosed\n', '')]:
        path.write_text(text)
        _check_preset_target(path, True)  # --force: no refusal
        with pytest.raises(ConfigError) as err:
            _check_preset_target(path, False)
        assert str(err.value) == f'tuned preset {path} already exists{what}{fix}', text
    path.write_bytes(b'\xff\xfe\x00bad')
    with pytest.raises(ConfigError) as err:
        _check_preset_target(path, False)
    assert str(err.value) == f'tuned preset {path} already exists{fix}'
    folder = tmp_path / 'a-folder.yaml'
    folder.mkdir()  # exists, but cannot be read: refused without the study's details
    with pytest.raises(ConfigError) as err:
        _check_preset_target(folder, False)
    assert str(err.value) == f'tuned preset {folder} already exists{fix}'


# ---------------------------------------------------------------------------------------------
# trial checkpoints


def test_take_over_checkpoints_moves_the_dead_trials_folder_and_reports_its_values(tmp_path):
    study = _study()
    dead = study.ask()
    for step, value in {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}.items():
        dead.report(value, step)
    study.tell(dead, state=TrialState.FAIL)
    retry = study.ask()
    study._storage.set_trial_system_attr(retry._trial_id, 'failed_trial', dead.number)
    source = tmp_path / 'trials' / str(dead.number)
    history = [{'epoch_seconds': 1.5, 'eval_seconds': 0.25}, {'epoch_seconds': 2.0},
               {'eval_seconds': 0.5}]
    save_checkpoint({'epoch': 3, 'history': history}, source / LAST)
    (source / 'best.pt').write_bytes(b'kept')
    folder, carried = _take_over_checkpoints(retry, tmp_path)
    assert folder == tmp_path / 'trials' / str(retry.number) and folder.is_dir()
    assert carried == 4.25
    assert not source.exists()
    assert sorted(p.name for p in folder.iterdir()) == ['best.pt', LAST]
    frozen = study.trials[retry.number]
    # the dead trial's values up to the checkpoint's epoch, reported again under the retry
    assert frozen.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}
    assert frozen.user_attrs == {'resumed_from': {'trial': dead.number, 'epoch': 3,
                                                  'seconds': 4.25}}


def test_take_over_checkpoints_without_anything_to_take_over(tmp_path):
    study = _study()
    first = study.ask()  # not a retry: a new, empty folder (trials/ created with it)
    # not a retry, so no other folder is looked at (not even one named like a missing number)
    save_checkpoint({'epoch': 1, 'history': []}, tmp_path / 'run' / 'trials' / 'None' / LAST)
    folder, carried = _take_over_checkpoints(first, tmp_path / 'run')
    assert folder == tmp_path / 'run' / 'trials' / '0' and folder.is_dir()
    assert not any(folder.iterdir())
    assert (tmp_path / 'run' / 'trials' / 'None' / LAST).is_file()
    assert carried == 0.0 and isinstance(carried, float)
    study.tell(first, state=TrialState.FAIL)
    # a retry of a trial that saved nothing starts afresh
    retry = study.ask()
    study._storage.set_trial_system_attr(retry._trial_id, 'failed_trial', first.number)
    assert _take_over_checkpoints(retry, tmp_path / 'run') == \
        (tmp_path / 'run' / 'trials' / '1', 0.0)
    assert study.trials[1].user_attrs == {} and study.trials[1].intermediate_values == {}
    # a retry whose own folder exists already keeps it (and the dead one's stays)
    study.tell(retry, state=TrialState.FAIL)
    again = study.ask()
    study._storage.set_trial_system_attr(again._trial_id, 'failed_trial', retry.number)
    save_checkpoint({'epoch': 1, 'history': [{'epoch_seconds': 9.0}]},
                    tmp_path / 'run' / 'trials' / '1' / LAST)
    (tmp_path / 'run' / 'trials' / '2').mkdir()
    assert _take_over_checkpoints(again, tmp_path / 'run') == \
        (tmp_path / 'run' / 'trials' / '2', 0.0)
    assert (tmp_path / 'run' / 'trials' / '1' / LAST).is_file()
    assert study.trials[2].user_attrs == {}


def test_remove_checkpoints_removes_the_folder_and_an_empty_trials_folder(tmp_path):
    assert _remove_checkpoints(None) is None
    trials = tmp_path / 'trials'
    for n in ('0', '1'):
        (trials / n / 'sub').mkdir(parents=True)
        (trials / n / 'sub' / LAST).write_bytes(b'x')
    _remove_checkpoints(trials / '0')
    assert sorted(p.name for p in trials.iterdir()) == ['1']  # another trial's folder: kept
    _remove_checkpoints(trials / '0')  # gone already: nothing to do
    _remove_checkpoints(trials / '1')
    assert not trials.exists() and tmp_path.is_dir()


# ---------------------------------------------------------------------------------------------
# the trial tracker


class _FakeTrial:
    def __init__(self, prune: bool):
        self.prune, self.reports, self.attrs = prune, [], {}

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return self.prune

    def set_user_attr(self, key, value):
        self.attrs[key] = value


class _Inner:
    def __init__(self):
        self.logged = []

    def log(self, metrics, step):
        self.logged.append((dict(metrics), step))


def test_trial_tracker_reports_the_metric_and_prunes_with_its_message():
    inner, trial = _Inner(), _FakeTrial(prune=False)
    tracker = _TrialTracker(inner, trial, 'val/recall@20', None)
    assert (tracker.inner, tracker.trial, tracker.key, tracker.seconds) == \
        (inner, trial, 'val/recall@20', None)
    tracker.log({'train/loss': 1.0}, 1)  # no validation this epoch: nothing reported
    tracker.log({'val/recall@20': 0.25}, 2)
    tracker.log({'val/recall@20': 0}, 3)  # a zero is a value
    assert inner.logged == [({'train/loss': 1.0}, 1), ({'val/recall@20': 0.25}, 2),
                            ({'val/recall@20': 0}, 3)]
    assert trial.reports == [(0.25, 2), (0.0, 3)]
    assert all(type(v) is float for v, _ in trial.reports)
    assert trial.attrs == {}
    inner, trial = _Inner(), _FakeTrial(prune=True)
    tracker = _TrialTracker(inner, trial, 'val/ndcg@10', 100.0)
    assert tracker.seconds == 100.0
    tracker.log({'val/recall@20': 0.5}, 1)  # another metric: not reported, not pruned
    with pytest.raises(optuna.TrialPruned) as err:
        tracker.log({'val/ndcg@10': 0.0123456}, 4)
    assert str(err.value) == 'pruned after epoch 4 (val/ndcg@10 0.01235)'
    assert trial.attrs == {'pruned_at_epoch': 4} and trial.reports == [(0.0123456, 4)]
    assert inner.logged[-1] == ({'val/ndcg@10': 0.0123456}, 4)  # logged before pruning


def test_trial_tracker_checks_the_budget_after_each_log():
    tracker = _TrialTracker(_Inner(), _FakeTrial(prune=False), 'val/m', 0.0)
    tracker.trainer = SimpleNamespace(stopped_early=False)
    tracker.log({'val/m': 0.5}, 2)
    assert tracker.cut_at == 2 and tracker.trainer.stopped_early is True


# ---------------------------------------------------------------------------------------------
# _Search's stages, on an in-memory study


def _search(lines: list, **fields) -> _Search:
    fields = {'trials': 3, 'log': lines.append, **fields}
    search = _Search(TuneOptions('mf', 'tiny', **fields))
    search.study_name, search.metric, search.safe_url = 'mf-tiny', 'recall@20', 'sqlite://'
    search.study = _study()
    return search


def test_search_init_checks_the_options_and_logs_with_print(capsys):
    search = _Search(TuneOptions('mf', 'd', trials=1))
    assert search.stopped_by is None and search.o.model == 'mf'
    assert search.optuna is optuna
    search.log('a line')
    assert capsys.readouterr().out == 'a line\n'
    with pytest.raises(ConfigError, match=r'^--trials must be a positive integer, got -1$'):
        _Search(TuneOptions('mf', 'd', trials=-1))



class _CountingStdout:
    """A stand-in ``sys.stdout`` that records what is written and counts the flushes."""

    def __init__(self):
        self.written, self.flushes = [], 0

    def write(self, text):
        self.written.append(text)
        return len(text)

    def flush(self):
        self.flushes += 1


def test_search_default_log_flushes_each_line(monkeypatch):
    """The default log is ``print(line, flush=True)``: each line reaches a piped stdout (a
    study's log file) when it is written, not when the buffer fills."""
    out = _CountingStdout()
    monkeypatch.setattr(sys, 'stdout', out)
    search = _Search(TuneOptions('mf', 'd', trials=1))
    search.log('first')
    assert (out.written, out.flushes) == (['first', '\n'], 1)
    search.log('second')
    assert (out.written[2:], out.flushes) == (['second', '\n'], 2)

def test_request_puts_the_fixed_options_before_the_point():
    search = _Search(TuneOptions('mf', 'd', trials=1, root='data', modalities=['image'],
                                 config_file='c.yaml', device='cpu'))
    search.model, search.fixed = 'mf', [('epochs', '2')]
    request = search.request([('lr', 0.01), ('model.reg_weight', 0.5)])
    assert (request.model, request.dataset, request.root, request.modalities) == \
        ('mf', 'd', 'data', ['image'])
    assert (request.config_file, request.device, request.progress) == ('c.yaml', 'cpu', False)
    assert list(request.overrides) == [('epochs', '2'), ('lr', 0.01), ('model.reg_weight', 0.5)]
    assert search.fixed == [('epochs', '2')]  # not extended in place


def test_pruner_settings_and_text():
    lines = []
    search = _search(lines, prune_percentile=25.0, prune_startup=3, prune_warmup=7)
    pruner = search._pruner()
    assert type(pruner) is optuna.pruners.PercentilePruner
    assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps) == (75.0, 3, 7)
    assert search.pruner_text == ('optuna PercentilePruner(percentile=75, n_startup_trials=3, '
                                  'n_warmup_steps=7): prunes below the 25th percentile')
    search = _search(lines, prune=False, prune_percentile=25.0)
    assert type(search._pruner()) is optuna.pruners.NopPruner
    assert search.pruner_text == 'none'
    search = _search(lines)  # the defaults: the median rule after 5 trials and 5 epochs
    pruner = search._pruner()
    assert (pruner._percentile, pruner._n_startup_trials, pruner._n_warmup_steps) == (50.0, 5, 5)


def test_storage_settings_and_a_bad_url(tmp_path, monkeypatch):
    made = []

    def record(url, **kwargs):  # Optuna's RDBStorage as called (a real one takes seconds)
        made.append((url, kwargs))
        return 'storage'

    lines = []
    first = _search(lines, heartbeat_interval=7, grace_period=21)
    first.run_dir = tmp_path / 'new' / 'study'
    first.storage = f'sqlite:///{tmp_path / "new" / "study" / "study.db"}'
    search = _search(lines, trial_checkpoints=True)
    search.run_dir, search.storage = tmp_path / 'new' / 'study', 'postgresql://h/db'
    monkeypatch.setattr(optuna.storages, 'RDBStorage', record)
    assert first._storage() == 'storage' and first.run_dir.is_dir()
    search._storage()  # the folder exists already: fine
    assert [(url, kw['engine_kwargs'], kw['heartbeat_interval'], kw['grace_period'])
            for url, kw in made] == [
        (f'sqlite:///{tmp_path / "new" / "study" / "study.db"}', {'connect_args': {'timeout': 60}},
         7, 21),
        ('postgresql://h/db', None, 60, 180)]
    callbacks = [kw['failed_trial_callback'] for _, kw in made]
    assert [type(c) for c in callbacks] == [optuna.storages.RetryFailedTrialCallback] * 2
    assert [c._max_retry for c in callbacks] == [1, 5]
    assert sorted(made[0][1]) == ['engine_kwargs', 'failed_trial_callback', 'grace_period',
                                  'heartbeat_interval']


def test_storage_opens_a_real_sqlite_database_and_keeps_optunas_warnings_quiet(tmp_path):
    """Optuna marks heartbeats experimental and the retry callback deprecated; opening the
    study's database shows neither warning."""
    search = _search([], heartbeat_interval=7, grace_period=21)
    search.run_dir = tmp_path / 'study'
    search.storage = f'sqlite:///{tmp_path / "study" / "study.db"}'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        storage = search._storage()
    assert caught == []
    assert type(storage) is optuna.storages.RDBStorage
    assert (storage.heartbeat_interval, storage.grace_period) == (7, 21)
    assert (tmp_path / 'study' / 'study.db').is_file()


def test_storage_that_cannot_be_opened_is_named_and_leaves_no_new_folder(tmp_path):
    search = _search([])
    (tmp_path / 'new').mkdir()
    url = 'nosuchdb://user:pw@host/y'
    for run_dir, kept in ((tmp_path / 'fresh', False), (tmp_path / 'new', True)):
        search.run_dir, search.storage = run_dir, url
        with pytest.raises(ConfigError) as err:
            search._storage()
        assert str(err.value).startswith(
            '--storage nosuchdb://user:***@host/y: cannot open the study database '
            '(NoSuchModuleError: ')
        assert str(err.value).endswith(
            '). Use a SQLAlchemy URL such as sqlite:///path/study.db or '
            'postgresql://user:pass@host/db')
        assert err.value.__cause__ is None and err.value.__suppress_context__
        assert run_dir.is_dir() is kept  # only a folder made for it is removed again



def test_storage_refused_after_writing_into_its_new_folder_keeps_the_folder(tmp_path,
                                                                              monkeypatch):
    """The folder is removed only when empty (``rmdir``); when the driver left a file in it
    before failing, the removal's ``OSError`` is ignored and the refusal is still the
    ``ConfigError`` naming the URL."""
    def refuse(url, **kwargs):  # a driver that writes a journal, then fails
        (tmp_path / 'fresh' / 'study.db-journal').write_text('x')
        raise RuntimeError('disk I/O error')

    search = _search([])  # its in-memory study made before RDBStorage is replaced
    search.run_dir, search.storage = tmp_path / 'fresh', 'sqlite:///somewhere/study.db'
    monkeypatch.setattr(optuna.storages, 'RDBStorage', refuse)
    with pytest.raises(ConfigError) as err:
        search._storage()
    assert str(err.value) == (
        '--storage sqlite:///somewhere/study.db: cannot open the study database (RuntimeError: '
        'disk I/O error). Use a SQLAlchemy URL such as sqlite:///path/study.db or '
        'postgresql://user:pass@host/db')
    assert sorted(p.name for p in (tmp_path / 'fresh').iterdir()) == ['study.db-journal']

def _objective(values, seconds=1.0):
    """Trials that take ``seconds`` each and score ``values`` in turn (``None``: pruned)."""
    values = iter(values)

    def objective(trial):
        trial.suggest_float('lr', 0.001, 0.1)
        trial.set_user_attr('seconds', seconds)
        value = next(values)
        if value is None:
            trial.set_user_attr('pruned_at_epoch', 2)
            raise optuna.TrialPruned()
        trial.set_user_attr('best_epoch', 1)
        trial.set_user_attr('epochs_run', 2)
        return value
    return objective


def test_after_trial_logs_each_trial_and_stops_at_the_trial_count():
    lines = []
    search = _search(lines, trials=2)
    search.study.optimize(_objective([None, 0.5, 0.75]), n_trials=10,
                          callbacks=[search.after_trial])
    study = search.study
    assert len(study.trials) == 2 and search.stopped_by == 'trials'
    lr = [f'lr={t.params["lr"]:.4g}' for t in study.trials]
    assert lines == [
        f'[tune mf-tiny] trial 0: PRUNED after epoch 2; {lr[0]}; 1.0s | 1/2 finished, 1s; '
        'no complete trial yet',
        f'[tune mf-tiny] trial 1: COMPLETE val recall@20 0.5000 at epoch 1/2; {lr[1]}; 1.0s | '
        '2/2 finished, 2s; best 0.5000 (trial 1)']


def test_after_trial_stops_at_the_budget_and_counts_failed_trials_as_unfinished():
    lines = []
    search = _search(lines, trials=10, timeout=10.0)
    objective = _objective([0.25, 0.75, 0.5, 0.9], seconds=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        search.study.optimize(objective, n_trials=10, callbacks=[search.after_trial])
    assert len(search.study.trials) == 3 and search.stopped_by == 'timeout'
    assert [line.split('| ')[1] for line in lines] == [
        '1/10 finished, 4s of 10s; best 0.2500 (trial 0)',
        '2/10 finished, 8s of 10s; best 0.7500 (trial 1)',
        '3/10 finished, 12s of 10s; best 0.7500 (trial 1)']
    # exactly at the budget stops too; a trial without recorded seconds shows nan
    lines.clear()
    search = _search(lines, trials=10, timeout=4.0)

    def failing(trial):
        raise RuntimeError('no seconds')

    search.study.optimize(_objective([0.5], seconds=4.0), n_trials=5,
                          callbacks=[search.after_trial])
    assert search.stopped_by == 'timeout' and lines[-1].endswith(
        '; 4.0s | 1/10 finished, 4s of 4s; best 0.5000 (trial 0)')
    search.stopped_by = None
    search.study.optimize(failing, n_trials=1, callbacks=[search.after_trial],
                          catch=(RuntimeError,))
    assert lines[-1] == ('[tune mf-tiny] trial 1: FAIL; ; nans | 1/10 finished, 4s of 4s; '
                         'best 0.5000 (trial 0)')
    assert search.stopped_by == 'timeout' and search.finished() == 1



def test_after_trial_lists_every_parameter_separated_by_a_space():
    lines = []
    search = _search(lines, trials=5)
    search.study.add_trial(create_trial(
        value=0.5, params={'lr': 0.01, 'model.reg_weight': 3},
        distributions={'lr': optuna.distributions.FloatDistribution(0.001, 0.1),
                       'model.reg_weight': optuna.distributions.IntDistribution(1, 5)},
        user_attrs={'seconds': 3.0, 'best_epoch': 1, 'epochs_run': 2}))
    search.after_trial(search.study, search.study.trials[0])
    assert lines == ['[tune mf-tiny] trial 0: COMPLETE val recall@20 0.5000 at epoch 1/2; '
                     'lr=0.01 model.reg_weight=3; 3.0s | 1/5 finished, 3s; best 0.5000 '
                     '(trial 0)']
    assert search.stopped_by is None


def test_optimize_hides_only_optunas_experimental_warnings():
    """``optimize`` silences Optuna's ``ExperimentalWarning`` (multivariate TPE) during the
    trials; any other warning of a trial still reaches the caller."""
    lines = []
    search = _search(lines, trials=1)

    def objective(trial):
        warnings.warn('a trial warning', UserWarning, stacklevel=1)
        warnings.warn('experimental', optuna.exceptions.ExperimentalWarning, stacklevel=1)
        return 0.5

    search.objective = objective
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        search.optimize()
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, 'a trial warning')]
    assert search.stopped_by == 'trials' and len(search.study.trials) == 1

def test_optimize_runs_until_the_count_or_reports_that_nothing_is_left():
    lines = []
    search = _search(lines, trials=2)
    search.objective = _objective([0.5, 0.25, 0.1])
    search.optimize()
    assert len(search.study.trials) == 2 and search.stopped_by == 'trials'
    assert search.finished() == 2 and len(lines) == 2
    lines.clear()
    search = _search(lines, trials=2)
    search.study = _study()
    search.study.add_trial(_frozen(TrialState.COMPLETE, 0.5, seconds=1.0))
    search.study.add_trial(_frozen(TrialState.PRUNED, seconds=1.0))
    search.optimize()
    assert search.stopped_by == 'trials' and len(search.study.trials) == 2
    assert lines == ['[tune mf-tiny] nothing to run: the study already reached its trial count']
    lines.clear()
    search = _search(lines, trials=5, timeout=2.0)
    search.study.add_trial(_frozen(TrialState.COMPLETE, 0.5, seconds=2.0))
    search.optimize()
    assert search.stopped_by == 'timeout' and len(search.study.trials) == 1
    assert lines == ['[tune mf-tiny] nothing to run: the study already reached its budget']
    lines.clear()
    search = _search(lines, trials=2, timeout=5.0)  # budget left: runs
    search.study.add_trial(_frozen(TrialState.COMPLETE, 0.5, seconds=2.0))
    search.study.add_trial(_frozen(TrialState.FAIL, seconds=9.0))
    search.objective = _objective([0.25])
    search.optimize()
    assert len(search.study.trials) == 3 and search.stopped_by == 'trials'


def test_result_without_a_complete_trial_and_with_one():
    lines = []
    search = _search(lines, write_preset=False)
    search.study.add_trial(_frozen(TrialState.PRUNED, seconds=1.5))
    search.stopped_by = 'timeout'
    result = search.result()
    assert result == TuneResult('mf-tiny', 'sqlite://', {'complete': 0, 'pruned': 1, 'failed': 0,
                                                         'running': 0, 'waiting': 0}, 1.5,
                                stopped_by='timeout')
    assert lines == ['[tune mf-tiny] no complete trial, so no tuned preset was written']
    lines.clear()
    for value, lr in ((0.25, 0.01), (0.75, 0.002), (0.5, 0.03)):
        search.study.add_trial(create_trial(
            value=value, params={'lr': lr, 'model.reg_weight': 1},
            distributions={'lr': optuna.distributions.FloatDistribution(0.001, 0.1),
                           'model.reg_weight': optuna.distributions.IntDistribution(1, 5)},
            user_attrs={'seconds': 2.0}))
    result = search.result()
    assert (result.best_trial, result.best_value, result.best_params) == \
        (2, 0.75, {'lr': 0.002, 'model.reg_weight': 1})
    assert type(result.best_value) is float and result.preset is None
    assert result.spent_seconds == 7.5 and result.counts['complete'] == 3
    assert lines == ["[tune mf-tiny] best trial 2: val recall@20 0.7500 (lr=0.002 "
                     "model.reg_weight=1); trials {'complete': 3, 'pruned': 1, 'failed': 0, "
                     "'running': 0, 'waiting': 0}"]
    search.o.write_preset = True
    calls = []
    search.write_preset = lambda *args: calls.append(args) or Path('written.yaml')
    result = search.result()
    assert result.preset == Path('written.yaml')
    assert [(best.number, counts, spent) for best, counts, spent in calls] == \
        [(2, result.counts, 7.5)]


class _Day(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        assert tz is datetime.timezone.utc
        return datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=tz)


def _provenance_search(lines, monkeypatch, **fields):
    search = _search(lines, **fields)
    search.sampler_text = 'TPESampler(n_startup_trials=10, multivariate=False)'
    search.sampler_seed, search.existing = 1_000_005, 2
    search.pruner_text = 'none'
    search.first = SimpleNamespace(train=SimpleNamespace(seed=7))
    search.identity = {'fixed': ['epochs=2']}
    search.space = SimpleNamespace(to_dict=lambda: {'lr': {'low': 0.001}})
    search.model, search.key, search.model_cls = 'mf', 'tiny', MODELS['mf']
    monkeypatch.setattr(tune_mod, '_git_commit', lambda: 'abc123')
    monkeypatch.setattr(tune_mod, '_dt', SimpleNamespace(datetime=_Day,
                                                         timezone=datetime.timezone))
    return search


def test_provenance_in_full(monkeypatch):
    lines = []
    search = _provenance_search(lines, monkeypatch, seed=1, timeout=60.0)
    best = create_trial(value=0.5, params={'lr': 0.01},
                        distributions={'lr': optuna.distributions.FloatDistribution(0.001, 0.1)},
                        user_attrs={'best_epoch': 4})
    best.number = 3
    counts = {'complete': 2, 'pruned': 1, 'failed': 4, 'running': 0, 'waiting': 0}
    monkeypatch.setattr(sys, 'argv', ['/venv/bin/mmssl-pyg', 'tune', '--model', 'mf', 'a b'])
    assert search.provenance(best, counts, 12.345) == {
        'study': 'mf-tiny', 'storage': 'sqlite://', 'metric': 'validation recall@20',
        'best_trial': 3, 'best_value': 0.5, 'best_epoch': 4,
        'trials': {'complete': 2, 'pruned': 1, 'failed': 4, 'target': 3},
        'budget_seconds': 60.0, 'spent_seconds': 12.3,
        'sampler': 'TPESampler(n_startup_trials=10, multivariate=False, seed=1000005) (--seed 1, '
                   '2 trials already in the study when this process started)',
        'pruner': 'none', 'train_seed': 7, 'fixed': ['epochs=2'],
        'search_space': {'lr': {'low': 0.001}}, 'date': '2026-03-04 05:06:07 UTC',
        'commit': 'abc123', 'command': "mmssl-pyg tune --model mf 'a b'"}
    monkeypatch.setattr(sys, 'argv', ['-m', 'x y'])
    assert search.provenance(best, counts, 1.0)['command'] == "-m 'x y'"
    del best.user_attrs['best_epoch']
    assert search.provenance(best, counts, 1.0)['best_epoch'] is None


def test_write_preset_writes_refuses_and_replaces(tmp_path, monkeypatch):
    import yaml
    lines = []
    search = _provenance_search(lines, monkeypatch, preset_dir=tmp_path)
    search.provenance = lambda best, counts, spent: {'study': 'mf-tiny', 'spent': spent,
                                                     'best': best.number}
    best = SimpleNamespace(number=1, params={'lr': 0.01, 'model.reg_weight': 0.5})
    path = tmp_path / 'mf-tiny.yaml'
    assert search.write_preset(best, {}, 3.0) == path
    assert yaml.safe_load(path.read_text()) == {
        'provenance': {'study': 'mf-tiny', 'spent': 3.0, 'best': 1},
        'model': {'reg_weight': 0.5}, 'train': {'lr': 0.01}}
    assert lines == [f'[tune mf-tiny] wrote {path}; use it with: mmssl-pyg train --model mf '
                     f'--dataset tiny --tuned']
    lines.clear()
    path.write_text("provenance: {study: old, best_value: 0.1, date: '2020'}\n")
    assert search.write_preset(best, {}, 3.0) is None  # appeared meanwhile: kept
    assert lines == [f'[tune mf-tiny] {path} appeared while the study ran; it was not replaced '
                     f'(pass --force to replace it, or --preset-dir DIR to write elsewhere)']
    assert path.read_text() == "provenance: {study: old, best_value: 0.1, date: '2020'}\n"
    lines.clear()
    search.o.force = True
    assert search.write_preset(best, {}, 3.0) == path
    assert lines[0] == f"[tune mf-tiny] replacing {path} (study 'old', best 0.1, 2020)"
    assert yaml.safe_load(path.read_text())['provenance']['best'] == 1
    lines.clear()
    path.write_text('')  # an empty old file
    search.write_preset(best, {}, 3.0)
    assert lines[0] == f'[tune mf-tiny] replacing {path} (study None, best None, None)'



def test_write_preset_routes_by_the_model_class_and_names_model_and_dataset(tmp_path,
                                                                             monkeypatch):
    """BM3's constructor takes ``batch_size``, which is also a train option: an unprefixed
    ``batch_size`` goes to both sections (``presets._route``); the header names the model
    and the dataset key of the study."""
    import yaml
    lines = []
    search = _provenance_search(lines, monkeypatch, preset_dir=tmp_path)
    search.model, search.key, search.model_cls = 'bm3', 'my-set', MODELS['bm3']
    search.o.model, search.o.dataset = 'bm3', 'My_Set'
    search.provenance = lambda best, counts, spent: {'study': 'bm3-my-set',
                                                     'metric': 'validation recall@20'}
    best = SimpleNamespace(number=0, params={'batch_size': 512, 'lr': 0.01})
    path = tmp_path / 'bm3-my-set.yaml'
    assert search.write_preset(best, {}, 1.0) == path
    text = path.read_text()
    assert yaml.safe_load(text) == {
        'provenance': {'study': 'bm3-my-set', 'metric': 'validation recall@20'},
        'model': {'batch_size': 512}, 'train': {'batch_size': 512, 'lr': 0.01}}
    assert text.splitlines()[:4] == [
        '# Tuned settings of bm3 on my-set, written by `mmssl-pyg tune`: the best trial of '
        'study',
        "# 'bm3-my-set', selected on validation recall@20 only (the test split was never "
        'evaluated).',
        '# Use: mmssl-pyg train --model bm3 --dataset my-set --tuned',
        '# Regenerate by rerunning the study rather than editing by hand.']

def test_tune_dispatches_its_arguments_to_the_stages(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, options):
            seen.append(options)

        def prepare(self):
            seen.append('prepare')

        def open_study(self):
            seen.append('open_study')

        def optimize(self):
            seen.append('optimize')

        def result(self):
            seen.append('result')
            return 'the result'

    monkeypatch.setattr(tune_mod, '_Search', Recorder)
    assert tune_mod.tune('mf', 'd', 4, timeout=9.0) == 'the result'
    assert seen == [TuneOptions('mf', 'd', 4, timeout=9.0), 'prepare', 'open_study', 'optimize',
                    'result']
    seen.clear()
    options = TuneOptions('mf', 'd', trials=2)
    tune_mod.tune(options)
    assert seen[0] is options
    seen.clear()
    tune_mod.tune(options, trials=5, seed=3)
    assert seen[0] == TuneOptions('mf', 'd', trials=5, seed=3) and options.trials == 2
    with pytest.raises(TypeError) as err:
        tune_mod.tune(options, 'x')
    assert str(err.value) == 'tune(TuneOptions(...)) takes its other fields as keywords'


def _space():
    from mmssl_pyg.training.search_space import SearchParam, SearchSpace
    return SearchSpace('mf', 'my-set', [
        SearchParam('lr', 'float', 's', low=0.001, high=0.1, log=True),
        SearchParam('model.reg_weight', 'categorical', 's', choices=(0.5, 0.1)),
        SearchParam('epochs', 'int', 's', low=2, high=9)], Path('mf.yaml'))


def _prepared(monkeypatch, tmp_path, **fields):
    """A :class:`_Search` whose ``prepare`` reads ``_space()`` and a stand-in ``prepare_run``
    that calls its ``before_data`` check and records the request."""
    from mmssl_pyg.training import run as run_mod
    seen = {'asked': [], 'requests': []}
    monkeypatch.setattr(tune_mod, 'load_search_space',
                        lambda model, key: seen['asked'].append((model, key)) or _space())
    first = SimpleNamespace(options=SimpleNamespace(train=SimpleNamespace(metric='ndcg@10')),
                            graph='G', identity={'digest': 'd'})

    def prepare_run(request, before_data):
        seen['requests'].append(request)
        before_data('resolved options')
        return first

    monkeypatch.setattr(run_mod, 'prepare_run', prepare_run)
    fields = {'trials': 1, 'preset_dir': tmp_path, 'log': [].append, **fields}
    return _Search(TuneOptions(fields.pop('model', 'MF'), fields.pop('dataset', 'My_Set'),
                               **fields)), seen, first


def test_prepare_probes_the_first_point_of_the_space(monkeypatch, tmp_path):
    search, seen, first = _prepared(monkeypatch, tmp_path, overrides=['batch_size=64'])
    search.prepare()
    assert seen['asked'] == [('mf', 'my-set')]
    assert (search.model, search.key, search.model_cls) == ('mf', 'my-set', MODELS['mf'])
    assert search.fixed == [('batch_size', 64)] and search.space.names == _space().names
    # the fixed options, then each range's low end and each list's first choice
    assert [list(r.overrides) for r in seen['requests']] == [
        [('batch_size', 64), ('lr', 0.001), ('model.reg_weight', 0.5), ('epochs', 2)]]
    assert search.first is first.options and search.data == ('G', {'digest': 'd'})
    assert search.metric == 'ndcg@10'


def test_prepare_refusals_in_full(monkeypatch, tmp_path):
    search, seen, _ = _prepared(monkeypatch, tmp_path, model='pop')
    with pytest.raises(ConfigError) as err:
        search.prepare()
    assert str(err.value) == 'pop has no hyper-parameters to tune (it is not trained)'
    assert seen['asked'] == []
    search, seen, _ = _prepared(monkeypatch, tmp_path, overrides=['lr=0.1', 'epochs=3',
                                                                  'batch_size=8'])
    with pytest.raises(ConfigError) as err:
        search.prepare()
    assert str(err.value) == ("['epochs', 'lr'] are searched (mf.yaml: search:) and fixed on the "
                              'command line; drop the key=value or remove it from the search '
                              'space')
    assert seen['requests'] == []
    # an existing tuned preset: refused after the data check, unless forced or not written
    (tmp_path / 'mf-my-set.yaml').write_text('provenance: {study: s, best_value: 1, date: d}\n')
    search, seen, _ = _prepared(monkeypatch, tmp_path)
    with pytest.raises(ConfigError) as err:
        search.prepare()
    assert str(err.value).startswith(f"tuned preset {tmp_path / 'mf-my-set.yaml'} already "
                                     "exists (study 's', best 1, d); nothing was run.")
    assert len(seen['requests']) == 1
    for fields in ({'force': True}, {'write_preset': False}):
        _prepared(monkeypatch, tmp_path, **fields)[0].prepare()


def test_prepare_checks_the_folder_options_before_the_data(monkeypatch, tmp_path):
    (tmp_path / 'a-file').write_text('x')
    for fields, message in [
            ({'run_dir': ''}, '--run-dir is empty: it would name the current folder. Fix: give a '
                              'folder path'),
            ({'preset_dir': ''}, '--preset-dir is empty: it would name the current folder. Fix: '
                                 'give a folder path'),
            ({'run_dir': tmp_path / 'a-file'}, f"--run-dir {str(tmp_path / 'a-file')!r} is a "
                                               f'file, not a folder. Fix: give a folder path'),
            ({'dataset': str(tmp_path), 'root': 'r'},
             f"--root 'r' is given, but --dataset {str(tmp_path)!r} is a folder: the folder is "
             f'the dataset and --root would be ignored. Fix: drop --root, or pass --dataset '
             f'NAME --root FOLDER')]:
        search, seen, _ = _prepared(monkeypatch, tmp_path, **fields)
        with pytest.raises(Exception) as err:
            search.prepare()
        assert str(err.value) == message, fields
    search, seen, _ = _prepared(monkeypatch, tmp_path, dataset='TikTok', run_dir=tmp_path / 'new',
                                root='r')
    search.prepare()  # a registry name with --root, a new folder: accepted
    assert seen['requests'][0].root == 'r' and search.key == 'tiktok'


def _to_open(lines, tmp_path, **fields):
    search = _Search(TuneOptions('mf', 'My_Set', **{'trials': 3, 'log': lines.append,
                                                    'runs_root': tmp_path, **fields}))
    search.model, search.key, search.metric = 'mf', 'my-set', 'recall@20'
    search.space = _space()
    search.fixed = [('batch_size', 64)]
    search.first = SimpleNamespace(
        train=SimpleNamespace(seed=11, to_dict=lambda: {'batch_size': 64, 'lr': 0.001,
                                                        'device': 'cpu', 'patience': 3}),
        model_kwargs={'embedding_dim': 8})
    search.data = ('G', {'digest': 'abc', 'modalities': ('image',)})
    return search


def _first_draw(sampler) -> float:
    study = optuna.create_study(direction='maximize', sampler=sampler)
    return study.ask().suggest_float('x', 0.0, 1.0)


def test_open_study_defaults_identity_seed_and_log_line(tmp_path):
    lines, storage = [], optuna.storages.InMemoryStorage()
    search = _to_open(lines, tmp_path, seed=2, startup_trials=4, multivariate=True,
                      timeout=60.0, storage='postgresql://u:pw@h/db')
    search._storage = lambda: storage
    optuna.logging.set_verbosity(optuna.logging.INFO)
    search.open_study()
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert search.study_name == 'mf-my-set' and search.run_dir == tmp_path / 'tune' / 'mf-my-set'
    assert search.storage == 'postgresql://u:pw@h/db'
    assert search.safe_url == 'postgresql://u:***@h/db'
    study = search.study
    assert study.study_name == 'mf-my-set'
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert type(study.pruner) is optuna.pruners.PercentilePruner
    assert search.sampler_text == 'TPESampler(n_startup_trials=4, multivariate=True)'
    assert search.existing == 0 and search.sampler_seed == 2_000_006
    sampler = study.sampler
    assert type(sampler) is optuna.samplers.TPESampler
    assert (sampler._n_startup_trials, sampler._multivariate) == (4, True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert _first_draw(sampler) == _first_draw(optuna.samplers.TPESampler(seed=2_000_006))
    assert search.identity == {
        'data': {'digest': 'abc', 'modalities': ['image']},
        'options': {'model': {'embedding_dim': 8}, 'train': {'batch_size': 64, 'patience': 3}},
        'model': 'mf', 'dataset': 'my-set', 'metric': 'val/recall@20',
        'search_space': _space().to_dict(), 'fixed': ['batch_size=64'], 'train_seed': 11,
        'sampler': 'TPESampler(n_startup_trials=4, multivariate=True)',
        'pruner': search.pruner_text}
    assert study.user_attrs['identity'] == search.identity
    assert lines == ['[tune mf-my-set] mf on my-set: 0 trial(s) in postgresql://u:***@h/db; '
                     'target 3 finished trials, budget 60s; searching lr, model.reg_weight, '
                     'epochs']


def test_open_study_continues_a_study_with_a_seed_mixed_with_its_trials(tmp_path):
    lines, storage = [], optuna.storages.InMemoryStorage()
    search = _to_open(lines, tmp_path, seed=5000, run_dir=tmp_path / 'here', study_name='s1',
                      config_file='c.yaml', prune=False)
    search._storage = lambda: storage
    search.open_study()
    assert (search.study_name, search.run_dir) == ('s1', tmp_path / 'here')
    assert search.storage == f'sqlite:///{(tmp_path / "here" / "study.db").resolve()}'
    assert search.identity['fixed'] == ['batch_size=64', '--config c.yaml']
    assert search.identity['pruner'] == 'none' and type(search.study.pruner) is \
        optuna.pruners.NopPruner
    assert search.sampler_seed == 5000 * 1_000_003 % 2**32 == 705_047_704
    for value in (0.1, 0.2, 0.3):
        search.study.add_trial(_frozen(TrialState.COMPLETE, value))
    lines.clear()
    again = _to_open(lines, tmp_path, seed=5000, run_dir=tmp_path / 'here', study_name='s1',
                     config_file='c.yaml', prune=False)
    again._storage = lambda: storage
    again.open_study()
    assert again.existing == 3 and again.sampler_seed == (5000 * 1_000_003 + 3) % 2**32
    assert len(again.study.trials) == 3
    assert lines == [f'[tune s1] mf on my-set: 3 trial(s) in {again.storage}; target 3 finished '
                     f'trials; searching lr, model.reg_weight, epochs']
    other = _to_open(lines, tmp_path, seed=5000, run_dir=tmp_path / 'here', study_name='s1',
                     prune=False)
    other._storage = lambda: storage
    with pytest.raises(ConfigError, match=r"fixed: study has \['batch_size=64', '--config "
                                          r"c.yaml'\], asked \['batch_size=64'\]"):
        other.open_study()



def test_open_study_refusal_names_the_study_and_its_database(tmp_path):
    lines, storage = [], optuna.storages.InMemoryStorage()
    first = _to_open(lines, tmp_path, run_dir=tmp_path / 'here', study_name='s2')
    first._storage = lambda: storage
    first.open_study()
    other = _to_open(lines, tmp_path, run_dir=tmp_path / 'here', study_name='s2', seed=1,
                     config_file='c.yaml')
    other._storage = lambda: storage
    with pytest.raises(ConfigError) as err:
        other.open_study()
    url = f'sqlite:///{(tmp_path / "here" / "study.db").resolve()}'
    assert str(err.value) == (
        f"study 's2' in {url} was created for another search (fixed: study has "
        f"['batch_size=64'], asked ['batch_size=64', '--config c.yaml']). Fix: continue it "
        f"with the same data and settings, or start a new study with --study-name or "
        f"--storage.")

class _Trainer:
    """Stands in for :class:`~mmssl_pyg.training.Trainer` in ``objective``: records how it is
    built and fitted, and fits with ``fit`` (a function of the tracker)."""
    made: list = []
    fit_with = None

    def __init__(self, model, graph, train, tracker=None, checkpoint_dir=None):
        self.args = (model, graph, train, tracker, checkpoint_dir)
        _Trainer.made.append(self)

    def fit(self, resume=False, test=True):
        self.fit_args = (resume, test)
        return _Trainer.fit_with(self.args[3])


class _Tracked:
    def __init__(self):
        self.finished = 0

    def log(self, metrics, step):
        pass

    def finish(self):
        self.finished += 1


def _objective_search(monkeypatch, tmp_path, fit, **fields):
    from mmssl_pyg.training import run as run_mod
    from mmssl_pyg.training import trainer as trainer_mod
    seen = {'prepare_run': [], 'start_tracker': []}
    inner = _Tracked()

    def start_tracker(mode, **kwargs):
        seen['start_tracker'].append((mode, kwargs))
        return inner

    def prepare_run(request, data):
        seen['prepare_run'].append((request, data))
        return SimpleNamespace(model='M', graph='G', options=SimpleNamespace(train='T'),
                               start_tracker=start_tracker)

    monkeypatch.setattr(run_mod, 'prepare_run', prepare_run)
    monkeypatch.setattr(trainer_mod, 'Trainer', _Trainer)
    _Trainer.made, _Trainer.fit_with = [], staticmethod(fit)
    search = _search([], **{'wandb': 'disabled', **fields})
    search.model, search.fixed, search.space = 'mf', [('batch_size', 64)], _space()
    search.data, search.run_dir = ('graph', {'digest': 'd'}), tmp_path
    search.identity = {'fixed': ['batch_size=64']}
    return search, seen, inner


def _fit(val=0.25, cut_at=None):
    def fit(tracker):
        tracker.cut_at = cut_at
        return SimpleNamespace(best_epoch=2, history=[{}, {}, {}],
                               val={'recall@20': val, 'ndcg@20': 0.125})
    return fit


def test_objective_trains_the_suggested_point_on_validation_only(monkeypatch, tmp_path):
    search, seen, inner = _objective_search(monkeypatch, tmp_path, _fit(), timeout=100.0)
    search.study.add_trial(_frozen(TrialState.COMPLETE, 0.5, seconds=30.0))
    trial = search.study.ask()
    value = search.objective(trial)
    assert value == 0.25 and type(value) is float
    (request, data), = seen['prepare_run']
    params = list(request.overrides)[1:]
    assert [name for name, _ in params] == ['lr', 'model.reg_weight', 'epochs']
    assert list(request.overrides)[0] == ('batch_size', 64) and data == ('graph', {'digest': 'd'})
    assert seen['start_tracker'] == [('disabled', {
        'dir': tmp_path, 'name': 'mf-tiny-trial1', 'project': 'mmssl-pyg-tune',
        'group': 'mf-tiny', 'job_type': 'trial',
        'config': {'study': 'mf-tiny', 'trial': 1, 'params': dict(params),
                   'fixed': ['batch_size=64']}})]
    trainer, = _Trainer.made
    model, graph, train, tracker, folder = trainer.args
    assert (model, graph, train, folder) == ('M', 'G', 'T', None)
    assert type(tracker) is _TrialTracker and tracker.inner is inner
    assert (tracker.key, tracker.seconds, tracker.trainer) == ('val/recall@20', 70.0, trainer)
    assert tracker.trial is trial
    assert trainer.fit_args == (False, False)  # no resume; the test split is never read
    assert inner.finished == 1
    search.study.tell(trial, value)
    attrs = search.study.trials[1].user_attrs
    assert 0.0 <= attrs.pop('seconds') < 5.0
    assert attrs == {'best_epoch': 2, 'epochs_run': 3,
                     'val': {'recall@20': 0.25, 'ndcg@20': 0.125}}



def test_objective_seconds_without_trial_checkpoints_are_this_process_only(monkeypatch,
                                                                            tmp_path):
    """Without trial checkpoints nothing is carried over: ``seconds`` is the trial's own
    clock time (here 102.5 - 100.0 on a stand-in clock)."""
    search, _, _ = _objective_search(monkeypatch, tmp_path, _fit())
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(tune_mod, 'time', SimpleNamespace(perf_counter=lambda: next(clock)))
    search.objective(search.study.ask())
    assert search.study.trials[0].user_attrs['seconds'] == 2.5

def test_objective_budget_left_and_a_budget_cut(monkeypatch, tmp_path):
    for timeout, spent, left in ((None, 30.0, None), (20.0, 30.0, 0.0), (45.5, 30.0, 15.5)):
        search, _, _ = _objective_search(monkeypatch, tmp_path, _fit(cut_at=3), timeout=timeout)
        search.study.add_trial(_frozen(TrialState.PRUNED, seconds=spent))
        trial = search.study.ask()
        search.objective(trial)
        assert _Trainer.made[0].args[3].seconds == left
        assert search.study.trials[1].user_attrs['budget_cut_at_epoch'] == 3


def test_objective_diverged_pruned_and_failed_trials(monkeypatch, tmp_path):
    from mmssl_pyg.training.trainer import NonFiniteLossError
    long = 'loss is nan ' + 'x' * 600

    def diverge(tracker):
        raise NonFiniteLossError(long)

    search, _, inner = _objective_search(monkeypatch, tmp_path, diverge, trial_checkpoints=True)
    trial = search.study.ask()
    with pytest.raises(optuna.TrialPruned) as err:
        search.objective(trial)
    assert str(err.value) == 'diverged: ' + long[:200]
    assert err.value.__cause__ is None and err.value.__suppress_context__
    attrs = search.study.trials[0].user_attrs
    assert attrs['diverged'] == long[:500] and 'seconds' in attrs and inner.finished == 1
    assert _Trainer.made[0].args[4] == tmp_path / 'trials' / '0'
    assert _Trainer.made[0].fit_args == (True, False)  # resumes from its folder (if any)
    assert not (tmp_path / 'trials').exists()  # the trial's folder is removed

    def prune(tracker):
        raise optuna.TrialPruned('pruned after epoch 2')

    search, _, inner = _objective_search(monkeypatch, tmp_path, prune, trial_checkpoints=True)
    with pytest.raises(optuna.TrialPruned, match='^pruned after epoch 2$'):
        search.objective(search.study.ask())
    assert not (tmp_path / 'trials').exists() and inner.finished == 1
    assert 'seconds' in search.study.trials[0].user_attrs

    def crash(tracker):
        raise RuntimeError('out of memory')

    search, _, inner = _objective_search(monkeypatch, tmp_path, crash, trial_checkpoints=True)
    with pytest.raises(RuntimeError, match='^out of memory$'):
        search.objective(search.study.ask())
    # a crashed trial keeps its checkpoints for its retry
    assert (tmp_path / 'trials' / '0').is_dir() and inner.finished == 1
    assert 'seconds' in search.study.trials[0].user_attrs


def test_objective_with_trial_checkpoints_counts_the_kept_epochs_seconds(monkeypatch, tmp_path):
    search, _, _ = _objective_search(monkeypatch, tmp_path, _fit(), trial_checkpoints=True)
    dead = search.study.ask()
    dead.report(0.1, 1)
    search.study.tell(dead, state=TrialState.FAIL)
    retry = search.study.ask()
    search.study._storage.set_trial_system_attr(retry._trial_id, 'failed_trial', 0)
    save_checkpoint({'epoch': 1, 'history': [{'epoch_seconds': 40.0, 'eval_seconds': 2.0}]},
                    tmp_path / 'trials' / '0' / LAST)
    assert search.objective(retry) == 0.25
    assert _Trainer.made[0].args[4] == tmp_path / 'trials' / '1'
    assert _Trainer.made[0].fit_args == (True, False)
    attrs = search.study.trials[1].user_attrs
    assert 42.0 <= attrs['seconds'] < 47.0  # the kept epoch's 42 s and this process's
    assert not (tmp_path / 'trials').exists()  # completed: its folder is removed


@pytest.mark.skipif(hasattr(tune_mod, 'x__check_identity__mutmut_orig'),
                    reason="mutmut's trampolines add stack frames between the caller and "
                    'the warning, so stacklevel is checked in the plain suite only')
def test_older_study_warning_names_the_line_that_opened_the_study():
    """``stacklevel=3``: past ``_check_identity`` and ``_Search.open_study``, the line that
    opened the study (``tune()``'s, or a caller's of ``open_study`` as here)."""
    study = _study()
    study.set_user_attr('identity', {'model': 'mf', 'metric': 'val/recall@20'})

    def open_study():  # plays _Search.open_study
        _check_identity(study, _identity(), 'old', 'sqlite://')

    with pytest.warns(UserWarning, match='older version') as caught:
        open_study()  # the warning's line
    assert (caught[0].filename, caught[0].lineno) == (__file__, _this_line() - 1)


def _this_line() -> int:
    return sys._getframe(1).f_lineno
