"""Tests of ``mmssl_pyg/training/run.py``.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused.

mmssl_pyg.training.run: one run assembly (RunRequest -> prepare_run -> Run), the request in
config.yaml, and resume as a merge (also of run folders written before requests were stored)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.testing import (
    assert_user_error,
    copy_mini,
    evaluate_json,
    metrics_of,
    run_cli,
    tree,
    write_json_dataset,
)
from mmssl_pyg.training import load_checkpoint
from mmssl_pyg.training.options import ConfigError
from mmssl_pyg.training.run import RunRequest, load_run_checkpoint, prepare_run, train_run

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


@pytest.fixture(scope='module')
def finished(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp('finished') / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(tiny), '--run-dir', str(run), *FAST,
                     '--epochs', '1']) == 0
    return run


#: A one-epoch MF run on the bundled tiktok-mini data (about a second).
TINY = dict(model='mf', dataset='tiktok-mini', device='cpu', wandb='disabled', progress=False,
            overrides=['num_threads=1', 'embedding_dim=8', 'batch_size=64',
                       'batches_per_epoch=2', 'patience=0'])


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


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


def test_evaluate_checkpoint_refuses_cutoffs_beyond_the_items(finished):
    from mmssl_pyg.training.run import evaluate_checkpoint
    with pytest.raises(ConfigError, match='exceed the number of items'):
        evaluate_checkpoint(finished, ks=(10**6,), device='cpu')



def test_evaluate_checkpoint_defaults(finished, monkeypatch):
    """With its defaults: the test split at 10, 20 and 50 with the validation items left in
    the ranking (they change recall@50 here), on the device 'auto' picks, 1,024 users a block,
    no progress bar, the processed data reused."""
    from mmssl_pyg.training import run
    from mmssl_pyg.training.evaluator import evaluate

    model, graph, _ = load_run_checkpoint(finished, 'cpu')
    kept = evaluate(model, graph, 'test', (10, 20, 50), exclude_val_at_test=False)
    assert kept != evaluate(model, graph, 'test', (10, 20, 50), exclude_val_at_test=True)
    seen = {}
    real_evaluate, real_load = run.evaluate, run.load_run_checkpoint

    def spy_evaluate(*args, **kwargs):
        seen['evaluate'] = args[2:], kwargs
        return real_evaluate(*args, **kwargs)

    def spy_load(*args):
        seen['load'] = args
        return real_load(*args)

    monkeypatch.setattr(run, 'evaluate', spy_evaluate)
    monkeypatch.setattr(run, 'load_run_checkpoint', spy_load)
    assert run.evaluate_checkpoint(finished) == {'epoch': 1, 'split': 'test', 'metrics': kept}
    assert seen['load'] == (finished, 'auto', None, False)
    assert seen['evaluate'] == (('test', (10, 20, 50)), {
        'exclude_val_at_test': False, 'batch_size': 1024, 'progress': False})


def test_evaluate_checkpoint_reads_ks_as_typed_and_names_bad_values(finished):
    from mmssl_pyg.training.run import evaluate_checkpoint

    out = evaluate_checkpoint(finished, 'val', ks='5,10', device='cpu')
    assert out['split'] == 'val' and list(out['metrics']) == [
        'recall@5', 'precision@5', 'ndcg@5', 'hit@5',
        'recall@10', 'precision@10', 'ndcg@10', 'hit@10']
    with pytest.raises(ConfigError) as err:
        evaluate_checkpoint(finished, ks='five', device='cpu')
    assert str(err.value) == "--ks: each value of option 'ks' expects an integer >= 1, got 'five'"
    with pytest.raises(ValueError) as err:
        evaluate_checkpoint(finished, split='train', device='cpu')
    assert str(err.value) == "split must be 'val' or 'test', got 'train'"


def test_a_checkpoint_without_an_epoch_is_evaluated_as_epoch_0(finished, tmp_path):
    """Weights saved by hand with the run's meta but no epoch count still evaluate."""
    from mmssl_pyg.training.run import evaluate_checkpoint

    state = torch.load(finished / 'best.pt', weights_only=True)
    assert state.pop('epoch') == 1
    torch.save(state, tmp_path / 'weights.pt')
    out = evaluate_checkpoint(tmp_path / 'weights.pt', device='cpu')
    assert out['epoch'] == 0
    assert out['metrics'] == evaluate_checkpoint(finished, device='cpu')['metrics']


def test_load_graph_reads_the_given_root_and_modalities_and_reuses_processed_data(tmp_path):
    from mmssl_pyg.training.run import load_graph

    mini = copy_mini(tmp_path)  # tiktok-mini's raw files (image and audio) in another folder
    graph = load_graph('tiktok-mini', root=str(mini), modalities=['audio'])
    assert graph.modalities == ['audio']
    processed = mini / 'processed' / 'data_audio.pt'
    assert list((mini / 'processed').iterdir()) == [processed]  # read from root
    stamp = processed.stat().st_mtime_ns
    load_graph('tiktok-mini', root=str(mini), modalities=['audio'])
    assert processed.stat().st_mtime_ns == stamp  # reused by default
    load_graph('tiktok-mini', root=str(mini), modalities=['audio'], force_reload=True)
    assert processed.stat().st_mtime_ns != stamp


def test_from_preset_takes_a_class_by_its_lower_cased_name_and_the_block_of_the_graphs_name():
    """configs/lightgcn.yaml's default block sets num_layers 1 (the class default is 3);
    configs/bm3.yaml's amazon-sports block sets reg_weight 0.01, its default block
    0.04961326086920538."""
    from mmssl_pyg.models import BM3, LightGCN
    from mmssl_pyg.testing import make_tiny_graph
    from mmssl_pyg.training.run import from_preset

    graph = make_tiny_graph()
    assert LightGCN(graph).num_layers == 3 and from_preset(LightGCN, graph).num_layers == 1
    graph.name = 'amazon-sports'
    assert from_preset(BM3, graph).reg_weight == 0.01  # the block of graph.name
    assert from_preset('bm3', graph, 'tiktok').reg_weight == 0.04961326086920538
    with pytest.raises(ConfigError) as err:  # checked like overrides, against the class
        from_preset('lightgcn', graph, num_layerz=2)
    assert str(err.value) == ("override model.num_layerz=2: unknown model option 'num_layerz'; "
                              'valid model options: embedding_dim, num_layers, reg_weight')
    with pytest.raises(ConfigError) as err:
        from_preset('lightgcn', graph, num_layers=-1)
    assert str(err.value) == ("override model.num_layers=-1: option 'num_layers' expects an "
                              'integer >= 0, got -1')


def test_a_run_request_from_its_record_keeps_only_recorded_fields_and_reads_old_records():
    stored = {'model': 'mf', 'dataset': 'tiny', 'root': '/data', 'modalities': ['image'],
              'config_file': None, 'overrides': ['lr=0.01'], 'tuned': True, 'wandb': 'offline',
              'epochs': 3, 'force': True, 'run_dir': '/elsewhere', 'unknown': 1}
    request = RunRequest.from_record({'request': stored})
    assert request == RunRequest(model='mf', dataset='tiny', root='/data',
                                 modalities=['image'], overrides=['lr=0.01'], tuned=True,
                                 wandb='offline', epochs=3)
    old = {'model': 'mf', 'dataset': 'tiny', 'root': '/data', 'modalities': ['audio'],
           'wandb_mode': 'disabled', 'train': {'epochs': 3}}  # written before requests were
    assert RunRequest.from_record(old) == RunRequest(  # stored: the top-level fields
        model='mf', dataset='tiny', root='/data', modalities=['audio'], wandb='disabled')
    assert RunRequest.from_record({'model': 'mf', 'dataset': 'tiny'}) == RunRequest(
        model='mf', dataset='tiny')


def test_a_resumed_request_is_tuned_when_either_request_is():
    saved = {'request': {'model': 'mf', 'dataset': 'tiny', 'tuned': False}}
    assert RunRequest(tuned=True).merged_over(saved).tuned is True
    assert RunRequest().merged_over({'request': {**saved['request'], 'tuned': True}}).tuned
    assert RunRequest().merged_over(saved).tuned is False


def test_a_resumed_request_finds_the_data_where_the_run_recorded_it():
    """A registry dataset is read from the run's recorded folder and modalities (its
    ``data:`` section) unless given now; the wandb mode is kept."""
    saved = {'model': 'mf', 'dataset': 'tiktok-mini', 'wandb_mode': 'offline',
             'data': {'root': '/stored/tiktok-mini', 'modalities': ['audio']}}
    request = RunRequest(model='MF').resumed(saved, 'runs/x')
    assert (request.model, request.dataset, request.root, request.modalities, request.wandb) \
        == ('mf', 'tiktok-mini', '/stored/tiktok-mini', ['audio'], 'offline')
    given = RunRequest(root='/here', modalities=['image']).resumed(saved, 'runs/x')
    assert (given.root, given.modalities) == ('/here', ['image'])
    # a dataset folder is read where the run recorded it, by its absolute path; the modalities
    # the run was asked for come before the ones it loaded
    folder = {'model': 'mf', 'dataset': 'data/mine', 'root': '/given/root',
              'modalities': ['image'], 'data': {'root': '/abs/data/mine', 'modalities': ['audio']}}
    request = RunRequest().resumed(folder, 'runs/x')
    assert (request.dataset, request.root, request.modalities) == (
        '/abs/data/mine', '/given/root', ['image'])
    with pytest.raises(ConfigError) as err:
        RunRequest(model='lightgcn').resumed(saved, 'runs/x')
    assert str(err.value) == ('cannot resume runs/x with --model lightgcn: the run was started '
                              'with mf')


def test_a_checkpoints_data_is_looked_for_where_it_was_recorded(tmp_path):
    """The recorded absolute folder first, then the checkpoint's own root; a root given now
    wins; a folder dataset is its folder; the checkpoint's modalities before the loaded ones;
    a recorded folder that is gone is named with the fix."""
    from mmssl_pyg.training.run import _checkpoint_request

    where = tmp_path / 'data'
    where.mkdir()
    ckpt = tmp_path / 'best.pt'
    meta = {'model': 'mf', 'dataset': 'tiktok-mini', 'root': '/meta/root'}
    recorded = {'root': str(where), 'modalities': ['audio']}
    assert _checkpoint_request(ckpt, meta, recorded, None, False) == RunRequest(
        model='mf', dataset='tiktok-mini', root=str(where), modalities=['audio'])
    assert _checkpoint_request(ckpt, {**meta, 'modalities': ['image']}, {}, None, True) == \
        RunRequest(model='mf', dataset='tiktok-mini', root='/meta/root', modalities=['image'],
                   force_reload=True)
    assert _checkpoint_request(ckpt, meta, {'root': '/gone'}, '/now', False).root == '/now'
    folder = {**meta, 'dataset': 'data/mine', 'root': None}
    assert _checkpoint_request(ckpt, folder, recorded, None, False) == RunRequest(
        model='mf', dataset=str(where), root=None, modalities=['audio'])
    assert _checkpoint_request(ckpt, folder, {}, None, False).dataset == 'data/mine'
    with pytest.raises(FileNotFoundError) as err:
        _checkpoint_request(ckpt, meta, {'root': str(tmp_path / 'gone')}, None, False)
    assert str(err.value) == (f"checkpoint {str(ckpt)!r} was trained on the data in "
                              f"{tmp_path / 'gone'}, which no longer exists. Fix: pass --root "
                              'FOLDER holding the same raw files')


def test_load_run_checkpoint_defaults_and_checkpoints_without_a_run_record(finished, tiny,
                                                                           tmp_path):
    """By default the device 'auto' picks and the processed data is reused; a checkpoint
    without the run's model and dataset record is refused by name."""
    from mmssl_pyg.training.checkpoint import CheckpointError

    stamps = {p: p.stat().st_mtime_ns for p in (tiny / 'processed').iterdir()}
    model, graph, state = load_run_checkpoint(finished)
    assert state['epoch'] == 1 and model.num_items == graph.num_items
    assert {p: p.stat().st_mtime_ns for p in (tiny / 'processed').iterdir()} == stamps
    full = torch.load(finished / 'best.pt', weights_only=True)
    for name, part in (('no-dataset', 'meta'), ('no-weights', 'model')):
        state = dict(full, meta=dict(full['meta']))
        if part == 'meta':
            del state['meta']['dataset']
        else:
            del state['model']
        torch.save(state, tmp_path / f'{name}.pt')
        with pytest.raises(CheckpointError) as err:
            load_run_checkpoint(tmp_path / f'{name}.pt', device='cpu')
        assert str(err.value) == (f"checkpoint {str(tmp_path / f'{name}.pt')!r} has no "
                                  'model/dataset record (meta); it was not written by mmssl-pyg '
                                  'train. Load it with Trainer in Python.')

def test_a_refused_runs_folder_is_emptied_of_tmp_files_only_when_nothing_else_is_in_it(
        tmp_path):
    """``_remove_if_empty`` removes every ``.*.tmp`` file (ours too: the folder is locked by
    this process) when the lock and such files are all there is, so that the folder can then
    be removed; a folder holding anything else, or one that is gone, is left as it is."""
    from mmssl_pyg.training.run import _remove_if_empty

    ours = f'.best.pt.{os.getpid()}.0badcafe.tmp'  # what atomic_write names its temporary
    empty = tmp_path / 'empty'
    empty.mkdir()
    for name in ('.lock', ours, '.metrics.json.1.ab.tmp'):
        (empty / name).write_text(name)
    _remove_if_empty(empty, keep='.lock')
    assert sorted(p.name for p in empty.iterdir()) == ['.lock']
    for other in ('notes.tmp', '.hidden', 'metrics.json', '.lock.TMP'):
        used = tmp_path / other
        used.mkdir()
        for name in ('.lock', ours, other):
            (used / name).write_text(name)
        _remove_if_empty(used, keep='.lock')
        assert sorted(p.name for p in used.iterdir()) == sorted(['.lock', ours, other])
    _remove_if_empty(tmp_path / 'gone', keep='.lock')  # nothing to clean, and no error
    assert not (tmp_path / 'gone').exists()

def test_force_replaces_the_run(run_copy, trained, capsys):
    data, _ = trained
    code, _, err = run_cli(['train', '--dataset', data, '--run-dir', run_copy, *FAST,
                            '--epochs', '1', '--force'], capsys)
    assert code == 0, err
    assert metrics_of(run_copy)['epochs_run'] == 1
    assert load_checkpoint(run_copy / 'last.pt')['epoch'] == 1


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


def test_prepare_run_seeds_before_building_so_a_request_builds_the_same_model():
    request = RunRequest(**{**TINY, 'seed': 3})
    a = prepare_run(request)
    torch.randn(100)  # the global stream moves on: prepare_run must seed again
    b = prepare_run(request, data=(a.graph, a.identity))
    c = prepare_run(RunRequest(**{**TINY, 'seed': 4}), data=(a.graph, a.identity))
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.options.train.seed == 3 and a.model_kwargs['embedding_dim'] == 8
    assert a.identity['digest'] and a.identity['root'].endswith('tiktok-mini')


def test_prepare_run_checks_options_before_loading_the_data(monkeypatch):
    import mmssl_pyg.training.run as run_module

    def no_loading(*args, **kwargs):
        raise AssertionError('the data was loaded before the options were checked')

    monkeypatch.setattr(run_module, 'load_data', no_loading)
    with pytest.raises(ConfigError, match='embedding_dim'):
        prepare_run(RunRequest(**{**TINY, 'overrides': ['embedding_dim=0']}))


def test_config_yaml_stores_the_request_and_resume_merges_it(tmp_path):
    run_dir = tmp_path / 'run'
    first = train_run(RunRequest(**TINY, epochs=1, seed=5, run_dir=run_dir))
    saved = yaml.safe_load((run_dir / 'config.yaml').read_text())
    request = saved['request']
    assert request['model'] == 'mf' and request['epochs'] == 1 and request['seed'] == 5
    assert request['overrides'] == TINY['overrides'] and request['wandb'] == 'disabled'
    assert request['dataset'] == 'tiktok-mini' and saved['train']['epochs'] == 1
    assert first.fit.resumed_from_epoch is None

    again = train_run(run_dir=run_dir, resume=True, epochs=2, overrides=['patience=3'],
                      progress=False)
    assert again.fit.resumed_from_epoch == 1 and len(again.fit.history) == 2
    merged = yaml.safe_load((run_dir / 'config.yaml').read_text())['request']
    assert merged['epochs'] == 2 and merged['seed'] == 5  # given now wins, the rest is kept
    assert merged['overrides'] == [*TINY['overrides'], 'patience=3']
    assert RunRequest.from_record({'request': merged}).overrides == merged['overrides']


def test_resume_of_a_run_folder_without_a_stored_request(tmp_path):
    """config.yaml written before requests were stored (model, dataset, root, modalities,
    wandb_mode at the top, options only resolved) still resumes, and gains a request."""
    run_dir = tmp_path / 'old'
    train_run(RunRequest(**TINY, epochs=1, run_dir=run_dir))
    path = run_dir / 'config.yaml'
    saved = yaml.safe_load(path.read_text())
    del saved['request']
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert RunRequest.from_record(saved).wandb == 'disabled'

    result = train_run(run_dir=run_dir, resume=True, epochs=2, progress=False)
    assert result.fit.resumed_from_epoch == 1 and len(result.fit.history) == 2
    request = yaml.safe_load(path.read_text())['request']
    assert request['model'] == 'mf' and request['epochs'] == 2 and request['overrides'] == []
    model, graph, state = load_run_checkpoint(run_dir, device='cpu')
    assert state['epoch'] in (1, 2) and model.num_items == graph.num_items


def test_resume_refuses_another_model(tmp_path):
    run_dir = tmp_path / 'run'
    train_run(RunRequest(**TINY, epochs=1, run_dir=run_dir))
    with pytest.raises(ConfigError, match='started with mf'):
        train_run(run_dir=run_dir, resume=True, model='lightgcn')


def test_merged_over_keeps_the_saved_fields_and_appends_overrides():
    saved = {'request': {'model': 'mf', 'dataset': 'tiktok-mini', 'epochs': 3, 'seed': 1,
                         'overrides': ['lr=0.01'], 'tuned': True, 'config_file': 'a.yaml'}}
    merged = RunRequest(epochs=9, overrides=[('patience', 2)]).merged_over(saved)
    assert (merged.model, merged.epochs, merged.seed, merged.tuned) == ('mf', 9, 1, True)
    assert merged.config_file == 'a.yaml'
    assert merged.to_record()['overrides'] == ['lr=0.01', 'patience=2']
