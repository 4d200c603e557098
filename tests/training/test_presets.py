"""Preset layers (``mmssl_pyg/training/presets.py``): the options every model gets on every
dataset, and where each value comes from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmssl_pyg.models import MODELS
from mmssl_pyg.training import presets
from mmssl_pyg.training.options import ConfigError, TrainConfig
from mmssl_pyg.training.presets import find_tuned_preset, resolve_options

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


def test_every_model_and_dataset_resolves_as_before_the_dataset_layer():
    """Without ``--tuned``: exactly the recorded options. With it: the options without it,
    overlaid by the tuned file's values (the tuned presets themselves change as the
    equal-budget study finishes, so their recorded values are not compared)."""
    before = json.loads(BEFORE.read_text())
    now = json.loads(json.dumps(resolve_all()))  # tuples -> lists, as recorded
    assert sorted(now) == sorted(before)
    for key in [k for k in now if k.endswith('|tuned')]:
        model, dataset, _ = key.split('|')
        tuned = yaml.safe_load(find_tuned_preset(model, dataset).read_text())
        expected = json.loads(json.dumps(now[f'{model}|{dataset}|preset']))
        expected['model_kwargs'].update(tuned.get('model') or {})
        expected['train'].update(tuned.get('train') or {})
        assert now[key] == expected, key
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
