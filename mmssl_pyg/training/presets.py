"""The preset loader (``mmssl_pyg/configs/<model>.yaml``) and the merge of a run's options.

Presets have a ``model:`` and a ``train:`` section, each with a ``default:`` block and
optional per-dataset blocks (see ``docs/CONTRIBUTING.md``), and may have a ``search:`` section
(the hyper-parameter search space of ``mmssl-pyg tune``, :mod:`mmssl_pyg.training.tune`).
Options are merged in this order, later wins::

    class defaults <- preset default <- preset <dataset> <- tuned preset (--tuned)
        <- --config FILE <- key=value overrides

A tuned preset, ``configs/tuned/<model>-<dataset>.yaml``, is the best configuration a
``mmssl-pyg tune`` study found on validation, with its provenance; it is applied only when asked
for (``tuned=True``, ``mmssl-pyg train --tuned``) and is also a valid ``--config`` file.

Every key is checked against the model class signature (``model:``) or the fields of
:class:`TrainConfig` (``train:``); an unknown key fails with a message naming it, where it came
from, and the valid keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..utils.options import current_names
from ..utils.yamlio import load_yaml
from .options import (
    ConfigError,
    TrainConfig,
    check_keys,
    check_option,
    model_option_types,
    train_option_types,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'configs'
TUNED_DIR = CONFIG_DIR / 'tuned'
#: Top-level keys of a ``--config`` file (``provenance`` is metadata of a tuned preset).
CONFIG_FILE_KEYS = ('model', 'train', 'provenance')
#: Suffix of the ID-only copy of a dataset (``amazon-baby-interactions``): it uses the preset
#: blocks, search blocks and tuned presets of the dataset it copies, unless it has its own.
ID_ONLY_SUFFIX = '-interactions'


def preset_names(dataset: str) -> list[str]:
    """Names whose preset blocks may apply to ``dataset``, the first found wins:
    ``['amazon-baby-interactions', 'amazon-baby']``, ``['tiktok']``."""
    names = [dataset]
    if dataset.endswith(ID_ONLY_SUFFIX):
        names.append(dataset[:-len(ID_ONLY_SUFFIX)])
    return names


def preset_block_key(block: dict, dataset: str) -> str:
    """The key of ``dataset``'s block in a preset section (see :func:`preset_names`)."""
    return next((n for n in preset_names(dataset) if n in block), dataset)


def preset_path(model_name: str) -> Path:
    return CONFIG_DIR / f'{model_name.lower()}.yaml'


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        what = ('is a folder, not a file' if path.is_dir() else
                'is a broken symbolic link (its target is missing, or a loop)'
                if path.is_symlink() else 'does not exist')
        raise FileNotFoundError(f'config file {str(path)!r} {what}. Fix: give the path of a '
                                f'YAML file with model: and/or train: sections')
    try:
        with open(path, encoding='utf-8') as f:
            data = load_yaml(f)
    except yaml.YAMLError as err:
        raise ConfigError(f'config file {str(path)!r} is not valid YAML: {err}') from None
    except UnicodeDecodeError as err:
        raise ConfigError(f'config file {str(path)!r} is not UTF-8 text ({err.reason} at byte '
                          f'{err.start}). Fix: save it as UTF-8 YAML with model: and/or train: '
                          f'sections') from None
    except RecursionError:
        raise ConfigError(f'config file {str(path)!r} is nested too deeply to be a config. Fix: '
                          f'write model: and/or train: sections of key: value lines') from None

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {str(path)!r} must be a mapping with model: and/or train: '
                         f'sections, got {type(data).__name__}')
    unknown = [k for k in data if k not in CONFIG_FILE_KEYS]
    if unknown:
        raise ConfigError(f'config file {str(path)!r}: unknown top-level key(s) {unknown}; '
                       f'expected model: and/or train: (and provenance: in a tuned preset)')
    for section in CONFIG_FILE_KEYS:
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f'config file {str(path)!r}: {section}: must be a mapping')
    return data


def _preset_section(preset: dict, section: str, dataset: str) -> tuple[dict, dict]:
    """``(default, per-dataset)`` blocks of one preset section. ``<name>-interactions``
    (the ID-only copy of a dataset) falls back to the ``<name>`` block."""
    block = preset.get(section) or {}
    default = dict(block.get('default') or {})
    per_dataset = dict(block.get(preset_block_key(block, dataset)) or {})
    return default, per_dataset


def _file_section(data: dict, section: str, dataset: str) -> dict:
    """A ``--config`` file section: flat ``key: value``, or preset-shaped
    (``default:`` / ``<dataset>:`` blocks) when it has a ``default`` mapping."""
    block = dict(data.get(section) or {})
    if isinstance(block.get('default'), dict):
        merged = dict(block['default'])
        merged.update(block.get(dataset) or {})
        return merged
    return block


def tuned_preset_path(model_name: str, dataset: str, folder: str | os.PathLike | None = None
                      ) -> Path:
    """Where ``mmssl-pyg tune`` writes the tuned preset of ``model_name`` on ``dataset``."""
    return Path(folder or TUNED_DIR) / f'{model_name.lower()}-{dataset}.yaml'


def find_tuned_preset(model_name: str, dataset: str, folder: str | os.PathLike | None = None
                      ) -> Path | None:
    """The tuned preset of ``model_name`` on ``dataset`` (``<name>-interactions`` falls back to
    ``<name>``'s, as preset blocks do), or ``None``."""
    for name in preset_names(dataset):
        path = tuned_preset_path(model_name, name, folder)
        if path.is_file():
            return path
    return None


@dataclass
class RunOptions:
    """Resolved model keyword arguments and trainer options, with where each came from."""
    model_kwargs: dict[str, Any]
    train: TrainConfig
    sources: dict[str, str] = field(default_factory=dict)


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """``['lr=1e-3', 'model.embedding_dim=32']`` -> ``[(key, value), ...]`` (YAML-typed)."""
    out = []
    for item in items or []:
        if '=' not in item:
            raise ConfigError(f'override {item!r} must look like key=value (e.g. lr=1e-3)')
        key, raw = item.split('=', 1)
        key = key.strip()
        if not key:
            raise ConfigError(f'override {item!r} has an empty key')
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


def resolve_options(model_cls, dataset: str, model_name: str | None = None,
                    config_file: str | os.PathLike | None = None,
                    overrides: list[str] | list[tuple[str, Any]] | None = None,
                    train_updates: dict[str, Any] | None = None,
                    base: tuple[dict, dict] | None = None,
                    tuned: bool | str | os.PathLike = False) -> RunOptions:
    """Merge preset default <- preset dataset <- tuned preset <- ``config_file`` <-
    ``overrides``.

    Args:
        model_cls: the model class (its signature validates ``model:`` keys).
        dataset: dataset name selecting the per-dataset preset blocks.
        model_name: preset file name (defaults to the lower-cased class name).
        config_file: a YAML file with ``model:`` / ``train:`` sections.
        overrides: ``key=value`` strings (or parsed pairs); a key goes to the model options
            when the model takes it and to the trainer options when :class:`TrainConfig` has
            it (to both when both do); ``model.key`` / ``train.key`` force one.
        train_updates: trainer options set last (the CLI's ``--epochs``, ``--seed``, ...).
        base: ``(model_kwargs, train_options)`` that replace the preset (used to resume a run
            with its saved options; ``tuned`` is then ignored: the saved options hold it).
        tuned: apply the tuned preset written by ``mmssl-pyg tune`` (``True``: the one of this
            model and dataset in ``configs/tuned/``, an error when there is none; a path: that
            file).
    """
    model_name = (model_name or model_cls.__name__).lower()
    model_types = model_option_types(model_cls)
    train_types = train_option_types()
    model_kw: dict[str, Any] = {}
    train_kw: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def apply(values: dict, section: str, source: str):
        valid = model_types if section == 'model' else train_types
        check_keys(values, valid, source, section)
        target = model_kw if section == 'model' else train_kw
        for k, v in values.items():
            ref = (valid or {}).get(k)
            target[k] = check_option(section, k, v, ref, source, model_cls=model_cls)
            sources[f'{section}.{k}'] = source

    if base is not None:
        # options saved under a former name (a run from before a rename) keep their value
        apply(current_names(model_cls, dict(base[0])), 'model', 'saved run options')
        apply(dict(base[1]), 'train', 'saved run options')
    else:
        path = preset_path(model_name)
        if path.is_file():
            preset = load_yaml(path.read_text()) or {}
            for section in ('model', 'train'):
                default, per_dataset = _preset_section(preset, section, dataset)
                apply(default, section, f'preset {path.name} ({section}.default)')
                apply(per_dataset, section, f'preset {path.name} ({section}.{dataset})')
        if tuned:
            tuned_path = _tuned_file(model_name, dataset, tuned)
            data = read_yaml(tuned_path)
            for section in ('model', 'train'):
                apply(dict(data.get(section) or {}), section, f'tuned preset {tuned_path}')
    if config_file is not None:
        data = read_yaml(config_file)
        for section in ('model', 'train'):
            apply(_file_section(data, section, dataset), section, f'config file {config_file}')
    pairs = parse_overrides(overrides) if overrides and isinstance(overrides[0], str) \
        else list(overrides or [])
    for key, value in pairs:
        for section, name in _route(key, model_types, train_types):
            apply({name: value}, section, f'override {key}={value}')
    if train_updates:
        apply({k: v for k, v in train_updates.items() if v is not None}, 'train',
              'command-line option')
    return RunOptions(model_kw, TrainConfig.from_dict(train_kw, 'train options'), sources)


def _tuned_file(model_name: str, dataset: str, tuned: bool | str | os.PathLike) -> Path:
    if tuned is True:
        path = find_tuned_preset(model_name, dataset)
        if path is None:
            raise ConfigError(
                f'no tuned preset for {model_name} on {dataset}: '
                f'{tuned_preset_path(model_name, dataset)} does not exist. Run `mmssl-pyg tune '
                f'--model {model_name} --dataset {dataset}` first, or drop --tuned.')
        return path
    return Path(tuned)


def _route(key: str, model_types: dict | None, train_types: dict) -> list[tuple[str, str]]:
    """Sections a ``key=value`` override goes to: ``model.``/``train.`` prefixes force one;
    a key both take (e.g. ``batch_size`` for MMSSL, whose critic memory check needs it) goes
    to both."""
    if key.startswith('model.'):
        return [('model', key[len('model.'):])]
    if key.startswith('train.'):
        return [('train', key[len('train.'):])]
    out = []
    if model_types is not None and key in model_types:
        out.append(('model', key))
    if key in train_types:
        out.append(('train', key))
    if out:
        return out
    if model_types is None:  # model takes **kwargs
        return [('model', key)]
    raise ConfigError(
        f'unknown option {key!r}; model options: {", ".join(sorted(model_types)) or "none"}; '
        f'train options: {", ".join(sorted(train_types))}')
