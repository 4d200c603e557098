r"""Tests of ``mmssl_pyg/training/presets.py``.

Which views the contrastive loss of Eq. 11 pairs (``cl_pairing``, issue 15): the paper's
``'overall'``, ``'items'`` (also items against their overall embedding) and ``'views'``
(modality view against modality view). Expected values are computed by hand.

The cold-item option of Eq. 2 (``cold_items``, issue 15): items without training
interactions get their own projected features instead of a zero :math:`\mathbf{i}^m`.
Expected values are computed by hand or from the paper's formula.

Adversarial runs, round two (issue 26): a refused command changes nothing, the run-folder
lock is atomic, options mean what was typed, the Python API checks its arguments, and a run
leaves nothing outside its run folder.

Preset layers (``mmssl_pyg/training/presets.py``): the options every model gets on every
dataset, and where each value comes from.

Preset loading and option merging: default <- dataset <- --config <- key=value."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mmssl_pyg.models import MODELS, LightGCN, get_model_class
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.testing import STUDY_DEFAULTS, assert_user_error, run_cli, write_json_dataset
from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.training import ConfigError, TrainConfig, presets, resolve_options
from mmssl_pyg.training.presets import CONFIG_DIR, find_tuned_preset, parse_overrides
from mmssl_pyg.training.run import full_model_kwargs


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    """An ID-only dataset of 40 users and 60 items."""
    return write_json_dataset(tmp_path_factory.mktemp('tiny') / 'tiny', num_users=40,
                              num_items=60, per_user=6)


#: ``resolve_options`` of every model on every dataset, with and without ``tuned=True``,
#: recorded on commit 086c71e, before the dataset layer (issue 25), by writing
#: ``resolve_all()`` to this file.
BEFORE = Path(__file__).with_name('resolved_options_before_issue25.json')


#: Every named dataset with preset blocks, the ID-only copies (they fall back to the blocks of
#: the dataset they copy), ``default`` (the synthetic timing units of the benchmarks) and a
#: dataset no preset names.
DATASETS = ('tiktok', 'tiktok-mini', 'movielens-100k', 'amazon-baby', 'amazon-sports',
            'allrecipes', 'amazon-baby-interactions', 'amazon-sports-interactions', 'default',
            'my-own-data')


def resolve_all() -> dict[str, dict]:
    """``{'<model>|<dataset>|preset|tuned': {'model_kwargs', 'train'}}`` of every model and
    dataset; ``tuned`` where a tuned preset exists."""
    out = {}
    for model in sorted(MODELS):
        for dataset in DATASETS:
            for tuned in (False, True):
                if tuned and find_tuned_preset(model, dataset) is None:
                    continue
                options = resolve_options(MODELS[model], dataset, model_name=model, tuned=tuned)
                out[f'{model}|{dataset}|{"tuned" if tuned else "preset"}'] = {
                    'model_kwargs': options.model_kwargs, 'train': options.train.to_dict()}
    return out


#: The one value set that changed: Pop has no preset, so the dataset preset of tiktok-mini
#: reaches it where no model preset block did; Pop has nothing to train (``trainable`` False:
#: the trainer runs one epoch without mini-batches), so none of these is used, and no stored
#: benchmark unit has Pop on tiktok-mini.
UNUSED_BY_POP = {'pop|tiktok-mini|preset': {'epochs': (1000, 50), 'patience': (10, 5),
                                            'batch_size': (1024, 512)}}


def test_cl_pairing_in_the_options_table():
    from mmssl_pyg.training.options import ConfigError
    from mmssl_pyg.training.presets import resolve_options
    with pytest.raises(ConfigError, match='cl_pairing'):
        resolve_options(MMSSL, 'tiktok', overrides=['cl_pairing=both'])
    opts = resolve_options(MMSSL, 'tiktok', overrides=['cl_pairing=views'])
    assert opts.model_kwargs['cl_pairing'] == 'views'
    assert resolve_options(MMSSL, 'tiktok').model_kwargs.get('cl_pairing', 'overall') == \
        'overall'


def test_cold_items_option_in_the_options_table():
    from mmssl_pyg.training.options import ConfigError
    from mmssl_pyg.training.presets import resolve_options
    with pytest.raises(ConfigError, match="cold_items"):
        resolve_options(MMSSL, 'tiktok', overrides=['cold_items=all'])
    opts = resolve_options(MMSSL, 'tiktok', overrides=['cold_items=features'])
    assert opts.model_kwargs['cold_items'] == 'features'


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


def test_every_model_and_dataset_resolves_as_before_the_dataset_layer():
    """Without ``--tuned``: exactly the recorded options (with the Sec. 8 defaults of
    :data:`STUDY_DEFAULTS` wherever the dataset has no value of its own). With it: the
    options without it, overlaid by the tuned file's values (the tuned presets themselves change
    as the equal-budget study finishes, so their recorded values are not compared)."""
    before = json.loads(BEFORE.read_text())
    now = json.loads(json.dumps(resolve_all()))  # tuples -> lists, as recorded
    # tuned presets come and go with the study (a void study's is removed), so only the
    # untuned keys are compared as a set; each tuned key below is checked against its file
    assert sorted(k for k in now if not k.endswith('|tuned')) == \
        sorted(k for k in before if not k.endswith('|tuned'))
    for key in [k for k in now if k.endswith('|tuned')]:
        model, dataset, _ = key.split('|')
        tuned = yaml.safe_load(find_tuned_preset(model, dataset).read_text())
        expected = json.loads(json.dumps(now[f'{model}|{dataset}|preset']))
        expected['model_kwargs'].update(tuned.get('model') or {})
        expected['train'].update(tuned.get('train') or {})
        assert now[key] == expected, key
    for key in [k for k in before if not k.endswith('|tuned')]:
        model, dataset, _ = key.split('|')
        model_kwargs, train = STUDY_DEFAULTS.get(model, ({}, {}))
        # a dataset's own block in the model preset (BM3's Amazon blocks) still wins
        path = presets.preset_path(model)
        preset = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
        own = {section: (preset.get(section) or {}).get(
            presets.preset_block_key(preset.get(section) or {}, dataset)) or {}
            if dataset != 'default' else {} for section in ('model', 'train')}
        before[key]['model_kwargs'].update(
            {k: v for k, v in model_kwargs.items() if k not in own['model']})
        before[key]['train'].update({k: v for k, v in train.items() if k not in own['train']})
    changed = {}
    for key in [k for k in before if not k.endswith('|tuned')]:
        if now[key]['model_kwargs'] != before[key]['model_kwargs']:
            changed[key] = ('model_kwargs', before[key]['model_kwargs'], now[key]['model_kwargs'])
        train = {k: (v, now[key]['train'][k]) for k, v in before[key]['train'].items()
                 if now[key]['train'][k] != v}
        if train:
            changed.setdefault(key, train)
    assert changed == UNUSED_BY_POP
    assert not getattr(MODELS['pop'], 'trainable', True)


def test_layers_merge_in_order_and_each_value_names_its_layer(tmp_path, monkeypatch):
    """model default <- dataset preset <- model dataset block <- tuned <- config <- overrides
    <- command-line options: a key set in every layer ends with the last one's value, and
    dropping the last layer shows the one below it."""
    from mmssl_pyg.models import LightGCN
    monkeypatch.setattr(presets, 'CONFIG_DIR', tmp_path)
    monkeypatch.setattr(presets, 'DATASET_DIR', tmp_path / 'datasets')
    (tmp_path / 'datasets').mkdir()
    (tmp_path / 'lgcn.yaml').write_text(
        'model:\n  default: {num_layers: 2}\n  sample: {num_layers: 1}\n'
        'train:\n  default: {epochs: 1, patience: 1, lr: 0.1, eval_every: 1, seed: 1}\n'
        '  sample: {patience: 3, lr: 0.3, eval_every: 3, seed: 3}\n')
    (tmp_path / 'datasets' / 'sample.yaml').write_text(
        'train:\n  epochs: 2\n  patience: 2\n  lr: 0.2\n  eval_every: 2\n  seed: 2\n')
    tuned = tmp_path / 'tuned.yaml'
    tuned.write_text('train:\n  lr: 0.4\n  eval_every: 4\n  seed: 4\n')
    config = tmp_path / 'config.yaml'
    config.write_text('train:\n  eval_every: 5\n  seed: 5\n')
    options = resolve_options(LightGCN, 'sample', model_name='lgcn', tuned=tuned,
                              config_file=config, overrides=['seed=6'],
                              train_updates={'device': 'cpu'})
    t = options.train
    assert (t.epochs, t.patience, t.lr, t.eval_every, t.seed) == (2, 3, 0.4, 5, 6)
    assert options.model_kwargs == {'num_layers': 1}
    assert options.sources == {
        'model.num_layers': 'preset lgcn.yaml (model.sample)',
        'train.epochs': 'dataset preset datasets/sample.yaml (train)',
        'train.patience': 'preset lgcn.yaml (train.sample)',
        'train.lr': f'tuned preset {tuned}',
        'train.eval_every': f'config file {config}',
        'train.seed': 'override seed=6',
        'train.device': 'command-line option'}
    # without a dataset preset or block (another dataset), the model default block applies
    other = resolve_options(LightGCN, 'other', model_name='lgcn')
    assert (other.train.epochs, other.train.patience, other.model_kwargs) == \
        (1, 1, {'num_layers': 2})
    # the ID-only copy of a dataset takes its dataset preset, as it takes its blocks
    assert resolve_options(LightGCN, 'sample-interactions', model_name='lgcn').train.epochs == 2
    # a resumed run takes its saved options alone: no preset layer
    saved = resolve_options(LightGCN, 'sample', model_name='lgcn',
                            base=({'num_layers': 4}, {'epochs': 9}))
    assert (saved.train.epochs, saved.train.patience) == (9, TrainConfig().patience)


def test_a_bad_dataset_preset_names_its_file_and_the_fix(tmp_path, monkeypatch):
    from mmssl_pyg.models import LightGCN
    monkeypatch.setattr(presets, 'DATASET_DIR', tmp_path)
    path = tmp_path / 'sample.yaml'
    path.write_text('model:\n  num_layers: 1\n')
    with pytest.raises(ConfigError, match=r"sample.yaml.*only a train: section.*\['model'\]"
                                          r".*Fix: .*<dataset> block"):
        resolve_options(LightGCN, 'sample')
    path.write_text('train:\n  epoch: 3\n')
    with pytest.raises(ConfigError, match=r"datasets/sample.yaml.*'epoch'.*epochs"):
        resolve_options(LightGCN, 'sample')
    path.write_text('train:\n  patience: many\n')
    with pytest.raises(ConfigError, match=r"datasets/sample.yaml.*'patience'"):
        resolve_options(LightGCN, 'sample')


def test_shipped_presets_have_no_empty_block_and_a_dataset_layer():
    """Every block of a model or dataset preset sets something; a dataset without values for
    a model has no key (issue 25)."""
    files = sorted(presets.CONFIG_DIR.glob('*.yaml')) + sorted(presets.DATASET_DIR.glob('*.yaml'))
    assert presets.dataset_preset_path('tiktok-mini') in files
    for path in files:
        data = yaml.safe_load(path.read_text())
        assert data, path
        for section, blocks in data.items():
            assert blocks, f'{path.name}: empty {section}:'
            if path.parent == presets.DATASET_DIR:
                continue  # a dataset preset's train: is flat
            for name, block in blocks.items():
                assert block, f'{path.name}: empty block {section}.{name}'


def test_the_sample_shares_its_run_length_through_the_dataset_preset():
    """tiktok-mini's epochs, patience and batch size come from its dataset preset for every
    model whose own preset does not set another value there."""
    own_batch = {'lightgcn', 'mmssl', 'mmssl-paper'}  # their papers' batch size 1024
    for name, cls in MODELS.items():
        options = resolve_options(cls, 'tiktok-mini', model_name=name)
        layer = 'dataset preset datasets/tiktok-mini.yaml (train)'
        assert options.sources['train.epochs'] == options.sources['train.patience'] == layer
        assert (options.train.epochs, options.train.patience) == (50, 5)
        if name in own_batch:
            assert options.sources['train.batch_size'] == f'preset {name}.yaml (train.tiktok-mini)'
            assert options.train.batch_size == 1024
        else:
            assert options.train.batch_size == 512, name


def test_lightgcn_preset_default_and_dataset_blocks():
    opts = resolve_options(LightGCN, 'tiktok')
    # the default blocks hold the TikTok study's winner (PROTOCOL.md Sec. 8); the class keeps
    # the paper's values (3 layers, L2 1e-4) and the trainer its lr 1e-3
    model_kwargs, train = STUDY_DEFAULTS['lightgcn']
    assert full_model_kwargs(LightGCN, opts.model_kwargs) == {'embedding_dim': 64, **model_kwargs}
    assert opts.train.lr == train['lr'] and opts.train.epochs == 1000 and \
        opts.train.patience == 10
    assert opts.sources['model.num_layers'] == 'preset lightgcn.yaml (model.default)'
    assert opts.sources['train.lr'] == 'preset lightgcn.yaml (train.default)'
    assert full_model_kwargs(LightGCN, {}) == {'embedding_dim': 64, 'num_layers': 3,
                                               'reg_weight': 1e-4}
    mini = resolve_options(LightGCN, 'tiktok-mini')
    assert mini.train.epochs == 50 and mini.train.patience == 5
    assert mini.sources['train.epochs'] == 'dataset preset datasets/tiktok-mini.yaml (train)'
    assert mini.sources['train.batch_size'] == 'preset lightgcn.yaml (train.tiktok-mini)'


def test_merge_order_and_type_parsing(tmp_path):
    cfg = tmp_path / 'exp.yaml'
    cfg.write_text('model:\n  num_layers: 1\ntrain:\n  lr: 5e-4\n  epochs: 7\n')
    opts = resolve_options(LightGCN, 'tiktok-mini', config_file=cfg,
                           overrides=['lr=1e-2', 'embedding_dim=32', 'ks=[5,20]',
                                      'train.patience=2', 'exclude_val_at_test=true'],
                           train_updates={'epochs': 3, 'seed': None})
    assert full_model_kwargs(LightGCN, opts.model_kwargs) == \
        {'embedding_dim': 32, 'num_layers': 1,
         'reg_weight': STUDY_DEFAULTS['lightgcn'][0]['reg_weight']}  # the preset's default
    t = opts.train
    assert (t.lr, t.epochs, t.patience, t.ks, t.exclude_val_at_test) == \
        (1e-2, 3, 2, (5, 20), True)
    assert isinstance(t.lr, float)  # YAML reads '1e-2' as a string: coerced
    assert opts.sources['model.num_layers'] == f'config file {cfg}'
    assert opts.sources['train.epochs'] == 'command-line option'


def test_preset_shaped_config_file(tmp_path):
    cfg = tmp_path / 'exp.yaml'
    cfg.write_text(yaml.safe_dump({'train': {'default': {'lr': 0.1},
                                             'tiktok': {'lr': 0.2}}}))
    assert resolve_options(LightGCN, 'tiktok', config_file=cfg).train.lr == 0.2
    assert resolve_options(LightGCN, 'amazon-baby', config_file=cfg).train.lr == 0.1


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_options(LightGCN, 'tiktok', overrides=['embeding_dim=3'])
    msg = str(info.value)
    assert "'embeding_dim'" in msg and 'embedding_dim' in msg and 'batch_size' in msg
    cfg = tmp_path / 'bad.yaml'
    cfg.write_text('model:\n  hidden: 3\n')
    with pytest.raises(ConfigError, match=r"bad.yaml.*'hidden'.*embedding_dim"):
        resolve_options(LightGCN, 'tiktok', config_file=cfg)
    cfg.write_text('optim:\n  lr: 3\n')
    with pytest.raises(ConfigError, match=r"unknown top-level key.*optim"):
        resolve_options(LightGCN, 'tiktok', config_file=cfg)
    with pytest.raises(ConfigError, match=r"'lr' expects a number"):
        resolve_options(LightGCN, 'tiktok', overrides=['lr=fast'])
    with pytest.raises(ConfigError, match='key=value'):
        parse_overrides(['lr'])
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        resolve_options(LightGCN, 'tiktok', config_file=tmp_path / 'nope.yaml')


def test_every_shipped_preset_is_valid():
    from mmssl_pyg.models import MODELS
    for path in sorted(CONFIG_DIR.glob('*.yaml')):
        name = path.stem
        if name not in MODELS:
            continue
        data = yaml.safe_load(path.read_text())
        assert set(data) <= {'model', 'train', 'search'}, path
        datasets = {k for s in data.values() for k in (s or {})}
        for dataset in datasets | {'tiktok'}:
            opts = resolve_options(MODELS[name], dataset, model_name=name)
            assert isinstance(opts.train, TrainConfig)


def test_key_taken_by_model_and_trainer_goes_to_both():
    from mmssl_pyg.models import LightGCN as Base

    class WithBatch(Base):
        def __init__(self, graph, embedding_dim: int = 64, batch_size: int = 1024):
            super().__init__(graph, embedding_dim)

    opts = resolve_options(WithBatch, 'tiktok', overrides=['batch_size=256'])
    assert opts.model_kwargs['batch_size'] == 256 and opts.train.batch_size == 256
    opts = resolve_options(WithBatch, 'tiktok', overrides=['train.batch_size=128'])
    assert 'batch_size' not in opts.model_kwargs and opts.train.batch_size == 128


def test_find_tuned_preset_looks_in_the_given_folder_and_falls_back_from_interactions(tmp_path):
    assert find_tuned_preset('MF', 'toy-interactions', tmp_path) is None
    (tmp_path / 'mf-toy.yaml').write_text('train:\n  lr: 0.1\n')
    # an ID-only dataset uses the tuned preset of the dataset it comes from
    assert find_tuned_preset('MF', 'toy-interactions', tmp_path) == tmp_path / 'mf-toy.yaml'
    (tmp_path / 'mf-toy-interactions.yaml').write_text('train:\n  lr: 0.2\n')
    assert find_tuned_preset('MF', 'toy-interactions', tmp_path) == \
        tmp_path / 'mf-toy-interactions.yaml'
    assert find_tuned_preset('MF', 'toy', tmp_path / 'elsewhere') is None


def test_tuned_without_a_tuned_preset_names_the_missing_file_and_the_fix():
    with pytest.raises(ConfigError) as err:
        resolve_options(LightGCN, 'sample', model_name='lightgcn', tuned=True)
    missing = CONFIG_DIR / 'tuned' / 'lightgcn-sample.yaml'
    assert str(err.value) == (
        f'no tuned preset for lightgcn on sample: {missing} does not exist. Run `mmssl-pyg '
        f'tune --model lightgcn --dataset sample` first, or drop --tuned.')


def test_read_yaml_messages_in_full(tmp_path):
    from mmssl_pyg.training.presets import read_yaml

    def message(path, error=ConfigError):
        with pytest.raises(error) as err:
            read_yaml(path)
        return str(err.value)

    fix = 'Fix: give the path of a YAML file with model: and/or train: sections'
    folder, loop, gone = tmp_path / 'folder.yaml', tmp_path / 'loop.yaml', tmp_path / 'no.yaml'
    folder.mkdir()
    os.symlink(loop, loop)
    assert message(folder, FileNotFoundError) == \
        f'config file {str(folder)!r} is a folder, not a file. {fix}'
    assert message(loop, FileNotFoundError) == (f'config file {str(loop)!r} is a broken symbolic '
                                                f'link (its target is missing, or a loop). {fix}')
    assert message(gone, FileNotFoundError) == f'config file {str(gone)!r} does not exist. {fix}'
    cfg = tmp_path / 'c.yaml'
    cfg.write_bytes(b'train:\n  lr: \xff\n')  # the bad byte is the 14th: index 13
    assert message(cfg) == (f'config file {str(cfg)!r} is not UTF-8 text (invalid start byte at '
                            f'byte 13). Fix: save it as UTF-8 YAML with model: and/or train: '
                            f'sections')
    cfg.write_text('[' * 50_000 + ']' * 50_000)
    assert message(cfg) == (f'config file {str(cfg)!r} is nested too deeply to be a config. Fix: '
                            f'write model: and/or train: sections of key: value lines')
    cfg.write_text('train: [\n')
    assert message(cfg).startswith(f'config file {str(cfg)!r} is not valid YAML: while parsing')
    cfg.write_text('- 1\n')
    assert message(cfg) == (f'config file {str(cfg)!r} must be a mapping with model: and/or '
                            f'train: sections, got list')
    cfg.write_text('train: {}\nmodle: {}\n')
    assert message(cfg) == (f"config file {str(cfg)!r}: unknown top-level key(s) ['modle']; "
                            f'expected model: and/or train: (and provenance: in a tuned preset)')
    for section in ('model', 'train', 'provenance'):
        cfg.write_text(f'{section}: 3\n')
        assert message(cfg) == f'config file {str(cfg)!r}: {section}: must be a mapping'
    cfg.write_text('# nothing\n')
    assert read_yaml(cfg) == {}
    cfg.write_text('model: {embedding_dim: 8}\ntrain:\nprovenance: {study: s}\n')
    assert read_yaml(cfg) == {'model': {'embedding_dim': 8}, 'train': None,
                              'provenance': {'study': 's'}}


def test_overrides_are_parsed_as_yaml_and_their_messages_are_in_full():
    import dataclasses
    assert parse_overrides(['lr=1e-3', 'model.embedding_dim=32', 'x=', 'ks=[1, 2', ' seed =7',
                            'a=b=c', 'flag= true']) == [
        ('lr', 0.001), ('model.embedding_dim', 32), ('x', None),  # an empty value is null
        ('ks', '[1, 2'), ('seed', 7), ('a', 'b=c'), ('flag', True)]  # bad YAML stays text
    assert parse_overrides(None) == [] and parse_overrides([]) == []
    # a blank value is null, even one YAML cannot read (a tab cannot start a YAML token)
    assert parse_overrides(['x= ', 'y=\t']) == [('x', None), ('y', None)]
    for item, message in (('lr', "override 'lr' must look like key=value (e.g. lr=1e-3)"),
                          (' =3', "override ' =3' has an empty key")):
        with pytest.raises(ConfigError) as err:
            parse_overrides([item])
        assert str(err.value) == message
    train = ', '.join(sorted(f.name for f in dataclasses.fields(TrainConfig)))
    for model, names in (('pop', 'none'), ('lightgcn', 'embedding_dim, num_layers, reg_weight')):
        with pytest.raises(ConfigError) as err:
            resolve_options(get_model_class(model), 'x', overrides=['bogus=1'])
        assert str(err.value) == (f"unknown option 'bogus'; model options: {names}; "
                                  f'train options: {train}')
    # model. / train. force a section; a key of neither section is refused there
    forced = resolve_options(LightGCN, 'x', overrides=['model.num_layers=2', 'train.seed=3'])
    assert (forced.model_kwargs['num_layers'], forced.train.seed) == (2, 3)
    assert (forced.sources['model.num_layers'], forced.sources['train.seed']) == \
        ('override model.num_layers=2', 'override train.seed=3')
    with pytest.raises(ConfigError) as err:  # the trainer's rule applies to a train. key
        resolve_options(LightGCN, 'x', overrides=['train.epochs=0'])
    assert str(err.value) == \
        "override train.epochs=0: option 'epochs' expects an integer >= 1, got 0"
    with pytest.raises(ConfigError, match="'seed'"):
        resolve_options(LightGCN, 'x', overrides=['model.seed=3'])

    class Free:  # a model that takes any keyword: an unknown key goes to the model
        def __init__(self, graph, **kwargs):
            pass

    free = resolve_options(Free, 'x', model_name='free', overrides=['anything=3'])
    assert (free.model_kwargs, free.sources) == ({'anything': 3},
                                                 {'model.anything': 'override anything=3'})


def test_every_value_names_its_layer_without_a_dataset_block_and_when_resumed(tmp_path,
                                                                             monkeypatch):
    from mmssl_pyg.models import LightGCN
    monkeypatch.setattr(presets, 'CONFIG_DIR', tmp_path)
    monkeypatch.setattr(presets, 'DATASET_DIR', tmp_path / 'datasets')
    (tmp_path / 'lgcn.yaml').write_text('model:\n  default: {num_layers: 2}\n'
                                        'train:\n  default: {epochs: 7}\n')
    options = resolve_options(LightGCN, 'other', model_name='LGCN')  # the name is lower-cased
    assert (options.model_kwargs, options.train.epochs) == ({'num_layers': 2}, 7)
    assert options.sources == {'model.num_layers': 'preset lgcn.yaml (model.default)',
                               'train.epochs': 'preset lgcn.yaml (train.default)'}
    # the layers themselves: a dataset without a block (nor a dataset preset) adds empty ones
    assert presets.preset_layers('lgcn', 'other') == [
        ('model', {'num_layers': 2}, 'preset lgcn.yaml (model.default)'),
        ('train', {'epochs': 7}, 'preset lgcn.yaml (train.default)'),
        ('model', {}, 'preset lgcn.yaml (model.other)'),
        ('train', {}, 'preset lgcn.yaml (train.other)')]
    # a resumed run: its saved options alone, each named as such
    saved = resolve_options(LightGCN, 'other', model_name='lgcn',
                            base=({'num_layers': 4}, {'epochs': 9}), overrides=['lr=0.5'])
    assert (saved.model_kwargs, saved.train.epochs, saved.train.lr) == ({'num_layers': 4}, 9, 0.5)
    assert saved.sources == {'model.num_layers': 'saved run options',
                             'train.epochs': 'saved run options', 'train.lr': 'override lr=0.5'}
    # without a model preset file: the class defaults, no source
    bare = resolve_options(LightGCN, 'other', model_name='nothing')
    assert (bare.model_kwargs, bare.sources, bare.train) == ({}, {}, TrainConfig())


def test_a_model_option_without_a_declaration_is_checked_against_its_default():
    class Plain:  # no annotations: the defaults' types are the rules
        def __init__(self, graph, size=3, rate=0.5):
            pass

    options = resolve_options(Plain, 'x', model_name='plain', overrides=['size=4', 'rate=2'])
    assert options.model_kwargs == {'size': 4, 'rate': 2.0}
    assert type(options.model_kwargs['rate']) is float
    with pytest.raises(ConfigError) as err:
        resolve_options(Plain, 'x', model_name='plain', overrides=['size=4.5'])
    assert str(err.value) == "override size=4.5: option 'size' expects an integer, got 4.5"
