"""The preset loader and the merge of a run's options.

Two kinds of preset ship in ``mmssl_pyg/configs/`` (see ``docs/CONTRIBUTING.md``):

- a **model preset**, ``<model>.yaml``: a ``model:`` and a ``train:`` section, each with an
  optional ``default:`` block and optional per-dataset blocks (only what differs for that model
  and dataset; a dataset without a block has no key), and optionally a ``search:`` section (the
  hyper-parameter search space of ``mmssl-pyg tune``, :mod:`mmssl_pyg.training.tune`);
- a **dataset preset**, ``datasets/<dataset>.yaml``: a ``train:`` section of the trainer options
  every model shares on that dataset (the sample ``tiktok-mini`` runs 50 epochs, patience 5).

Options are merged in this order, later wins::

    class defaults <- model preset default <- dataset preset <- model preset <dataset>
        <- tuned preset (--tuned) <- --config FILE <- key=value overrides

so a dataset's shared run settings replace a model's general ones, and what a model needs on
that dataset replaces both. A tuned preset, ``configs/tuned/<model>-<dataset>.yaml``, is the
best configuration a ``mmssl-pyg tune`` study found on validation, with its provenance; it is
applied only when asked for (``tuned=True``, ``mmssl-pyg train --tuned``) and is also a valid
``--config`` file. :func:`resolve_options` records which of these set each value
(:attr:`RunOptions.sources`).

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
#: Dataset presets: ``<dataset>.yaml`` with the trainer options every model shares there.
DATASET_DIR = CONFIG_DIR / 'datasets'
#: Top-level keys of a ``--config`` file (``provenance`` is metadata of a tuned preset).
CONFIG_FILE_KEYS = ('model', 'train', 'provenance')
#: Suffix of the ID-only copy of a dataset (``amazon-baby-interactions``): it uses the preset
#: blocks, dataset preset, search blocks and tuned presets of the dataset it copies, unless it
#: has its own.
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


def dataset_preset_path(dataset: str, folder: str | os.PathLike | None = None) -> Path | None:
    """The dataset preset of ``dataset`` (``<name>-interactions`` falls back to ``<name>``'s,
    as model preset blocks do), or ``None``."""
    for name in preset_names(dataset):
        path = Path(folder or DATASET_DIR) / f'{name}.yaml'
        if path.is_file():
            return path
    return None


def read_dataset_preset(path: str | os.PathLike) -> dict[str, Any]:
    """The ``train:`` options of a dataset preset (checked against :class:`TrainConfig` by
    :func:`resolve_options`)."""
    data = read_yaml(path)
    other = [k for k in data if k != 'train']
    if other:
        raise ConfigError(
            f'dataset preset {str(path)!r}: only a train: section is allowed, got {other}. Fix: '
            f'put options that differ by model in the <dataset> block of that model\'s preset, '
            f'{CONFIG_DIR}/<model>.yaml')
    return dict(data.get('train') or {})


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


def preset_layers(model_name: str, dataset: str) -> list[tuple[str, dict, str]]:
    """The preset layers of ``model_name`` on ``dataset`` in merge order (later wins), as
    ``(section, values, source)``: the model preset's ``default`` blocks, the dataset preset,
    then the model preset's blocks of ``dataset`` (``<name>-interactions``, the ID-only copy of
    a dataset, falls back to the ``<name>`` block). A missing file or block adds nothing."""
    path = preset_path(model_name)
    preset = (load_yaml(path.read_text()) or {}) if path.is_file() else {}
    sections = {s: preset.get(s) or {} for s in ('model', 'train')}
    layers = [(s, dict(block.get('default') or {}), f'preset {path.name} ({s}.default)')
              for s, block in sections.items()]
    dataset_path = dataset_preset_path(dataset)
    if dataset_path is not None:
        layers.append(('train', read_dataset_preset(dataset_path),
                       f'dataset preset datasets/{dataset_path.name} (train)'))
    for s, block in sections.items():
        key = preset_block_key(block, dataset)
        layers.append((s, dict(block.get(key) or {}), f'preset {path.name} ({s}.{key})'))
    return layers


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
    """Merge the preset layers (:func:`preset_layers`: model preset default <- dataset preset
    <- model preset dataset block) <- tuned preset <- ``config_file`` <- ``overrides`` <-
    ``train_updates``; :attr:`RunOptions.sources` names the layer that set each value.

    Args:
        model_cls: the model class (its signature validates ``model:`` keys).
        dataset: dataset name selecting the dataset preset and the per-dataset blocks.
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
        for section, values, source in preset_layers(model_name, dataset):
            apply(values, section, source)
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
