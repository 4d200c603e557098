"""Preset loading and option merging: default <- dataset <- --config <- key=value."""
from __future__ import annotations

import pytest
import yaml

from mmssl_pyg.models import LightGCN
from mmssl_pyg.training import ConfigError, TrainConfig, resolve_options
from mmssl_pyg.training.presets import CONFIG_DIR, parse_overrides
from mmssl_pyg.training.run import full_model_kwargs


def test_lightgcn_preset_default_and_dataset_blocks():
    opts = resolve_options(LightGCN, 'tiktok')
    # the preset restates no class default: the model runs with the class's values
    assert full_model_kwargs(LightGCN, opts.model_kwargs) == \
        {'embedding_dim': 64, 'num_layers': 3, 'reg_weight': 1e-4}
    assert opts.train.lr == 1e-3 and opts.train.epochs == 1000 and opts.train.patience == 10
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
        {'embedding_dim': 32, 'num_layers': 1, 'reg_weight': 1e-4}
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
