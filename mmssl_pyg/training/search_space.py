"""Search spaces of ``mmssl-pyg tune`` and the tuned presets it writes back.

A search space is the ``search:`` section of a model's preset (see
:mod:`mmssl_pyg.training.tune` for its shape); :func:`load_search_space` reads and checks it.
:func:`write_tuned_preset` writes a study's best parameters as
``configs/tuned/<model>-<dataset>.yaml``, with its provenance.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..utils.io import atomic_write
from ..utils.yamlio import load_yaml
from .options import ConfigError, check_keys, model_option_types, train_option_types
from .presets import _route, preset_block_key, preset_path

SEARCH_SECTION = 'search'
PARAM_FIELDS = ('low', 'high', 'log', 'step', 'choices', 'type', 'source')


# ---------------------------------------------------------------------------------------------
# search spaces


@dataclass(frozen=True)
class SearchParam:
    """One searched option.

    Attributes:
        name: the key as written in the preset (``lr``, ``model.reg_weight``); also the Optuna
            parameter name.
        kind: ``'float'``, ``'int'`` or ``'categorical'``.
        source: where the range comes from.
        low, high, log, step: the range (``kind`` float or int).
        choices: the values (``kind`` categorical).
    """
    name: str
    kind: str
    source: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """Draw the value from an Optuna trial."""
        if self.kind == 'categorical':
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == 'int':
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == 'categorical':
            out = {'choices': list(self.choices)}
        else:
            out = {'type': self.kind, 'low': self.low, 'high': self.high}
            if self.log:
                out['log'] = True
            if self.step is not None:
                out['step'] = self.step
        out['source'] = self.source
        return out


@dataclass
class SearchSpace:
    """The searched options of one model on one dataset (see the module docstring)."""
    model: str
    dataset: str
    params: list[SearchParam]
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial) -> list[tuple[str, Any]]:
        """``[(name, value), ...]`` for ``resolve_options(overrides=...)``."""
        return [(p.name, p.suggest(trial)) for p in self.params]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f'{where} must be a number, got {value!r}')
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    except (TypeError, ValueError):
        raise ConfigError(f'{where} must be a number, got {value!r}') from None


def parse_param(name: str, spec: Any, where: str) -> SearchParam:
    """One ``search:`` entry -> :class:`SearchParam` (``where`` names the file and field in
    errors)."""
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: expected a mapping like {{low: 1.0e-4, high: 1.0e-2, '
                          f'log: true, source: "..."}} or {{choices: [...], source: "..."}}, '
                          f'got {spec!r}')
    unknown = sorted(set(spec) - set(PARAM_FIELDS))
    if unknown:
        raise ConfigError(f'{where}: unknown field(s) {unknown}; valid fields: '
                          f'{", ".join(PARAM_FIELDS)}')
    source = spec.get('source')
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f'{where}: source is missing; say where the range comes from (the '
                          f'paper\'s searched range, a toolkit\'s grid, or "this library\'s '
                          f'choice: <why>")')
    kind = spec.get('type')
    if kind is not None and kind not in ('float', 'int'):
        raise ConfigError(f'{where}.type must be float or int, got {kind!r}')
    if 'choices' in spec:
        extra = sorted(set(spec) & {'low', 'high', 'log', 'step', 'type'})
        if extra:
            raise ConfigError(f'{where}: choices cannot be combined with {extra}')
        choices = spec['choices']
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f'{where}.choices must be a non-empty list, got {choices!r}')
        bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
        if bad:
            raise ConfigError(f'{where}.choices: {bad} are not numbers, strings, booleans or '
                              f'null (Optuna stores only those)')
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f'{where}.choices has duplicates: {choices}')
        return SearchParam(name, 'categorical', source.strip(), choices=tuple(choices))
    if 'low' not in spec or 'high' not in spec:
        raise ConfigError(f'{where}: give low and high (a range) or choices (a list)')
    low, high = _number(spec['low'], f'{where}.low'), _number(spec['high'], f'{where}.high')
    log = spec.get('log', False)
    if not isinstance(log, bool):
        raise ConfigError(f'{where}.log must be true or false, got {log!r}')
    step = spec.get('step')
    if step is not None:
        step = _number(step, f'{where}.step')
        if step <= 0:
            raise ConfigError(f'{where}.step must be > 0, got {step!r}')
        if log:
            raise ConfigError(f'{where}: step and log cannot be combined (Optuna samples a '
                              f'log range continuously)')
    if kind is None:
        kind = 'int' if isinstance(low, int) and isinstance(high, int) and \
            (step is None or isinstance(step, int)) else 'float'
    if kind == 'int':
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise ConfigError(f'{where}: an int range needs integer low/high/step, got '
                              f'{low!r}, {high!r}, {step!r}')
        low, high, step = int(low), int(high), None if step is None else int(step)
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f'{where}: low must be below high, got low={low!r}, high={high!r}')
    if log and low <= 0:
        raise ConfigError(f'{where}: a log range needs low > 0, got {low!r} (use choices to '
                          f'include 0)')
    return SearchParam(name, kind, source.strip(), low, high, log, step)


def parse_search_space(section: Any, dataset: str, where: str, model_cls=None,
                       model_name: str | None = None) -> SearchSpace:
    """A preset's ``search:`` section -> the :class:`SearchSpace` of ``dataset`` (the
    ``default`` block updated by the dataset's; ``<name>-interactions`` falls back to
    ``<name>``'s block). With ``model_cls`` every name is checked against the model's and the
    trainer's options."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f'{where}: search: must be a mapping with a default: block')
    for block_name, block in section.items():
        if block is not None and not isinstance(block, dict):
            raise ConfigError(f'{where}: search.{block_name} must be a mapping of option names '
                              f'to ranges, got {type(block).__name__}')
    block_key = preset_block_key(section, dataset)
    merged: dict[str, tuple[Any, str]] = {}
    for name, spec in (section.get('default') or {}).items():
        merged[name] = (spec, f'{where}: search.default.{name}')
    for name, spec in (section.get(block_key) or {}).items() if block_key != 'default' else ():
        if spec is None:
            merged.pop(name, None)
        else:
            merged[name] = (spec, f'{where}: search.{block_key}.{name}')
    params = [parse_param(name, spec, w) for name, (spec, w) in merged.items()]
    if model_cls is not None:
        model_types, train_types = model_option_types(model_cls), train_option_types()
        for p in params:
            try:
                for section, key in _route(p.name, model_types, train_types):
                    valid = model_types if section == 'model' else train_types
                    check_keys({key: None}, valid, f'{section}.{key}', section)
            except ConfigError as err:
                raise ConfigError(f'{where}: search parameter {p.name!r}: {err}') from None
    return SearchSpace(model_name or '', dataset, params)


def load_search_space(model_name: str, dataset: str, path: str | os.PathLike | None = None
                      ) -> SearchSpace:
    """The search space of ``model_name`` on ``dataset`` from its preset (or ``path``)."""
    from ..models import get_model_class
    model_cls = get_model_class(model_name)
    path = Path(path) if path is not None else preset_path(model_name)
    if not path.is_file():
        raise ConfigError(f'{model_name} has no preset file {path}, so no search space; add a '
                          f'search: section there')
    data = load_yaml(path.read_text()) or {}
    space = parse_search_space(data.get(SEARCH_SECTION), dataset, str(path), model_cls,
                               model_name.lower())
    space.path = path
    if not space.params:
        raise ConfigError(f'{path}: no search space for {model_name} on {dataset}; add a '
                          f'search: section with a default: block (see mmssl_pyg/training/'
                          f'tune.py)')
    return space


# ---------------------------------------------------------------------------------------------
# tuned presets


def split_sections(params: dict[str, Any], model_cls) -> dict[str, dict[str, Any]]:
    """``{'model': {...}, 'train': {...}}`` of searched values, routed like overrides."""
    out: dict[str, dict[str, Any]] = {'model': {}, 'train': {}}
    model_types, train_types = model_option_types(model_cls), train_option_types()
    for name, value in params.items():
        for section, key in _route(name, model_types, train_types):
            out[section][key] = value
    return out


def write_tuned_preset(path: str | os.PathLike, model_name: str, dataset: str,
                       sections: dict[str, dict[str, Any]], provenance: dict[str, Any]) -> Path:
    """Write a tuned preset (atomically): a comment header, ``provenance:``, ``model:`` and
    ``train:``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f'# Tuned settings of {model_name} on {dataset}, written by `mmssl-pyg tune`: the best '
            f'trial of study\n# {provenance.get("study")!r}, selected on '
            f'{provenance.get("metric")} only (the test split was never evaluated).\n'
            f'# Use: mmssl-pyg train --model {model_name} --dataset {dataset} --tuned\n'
            f'# Regenerate by rerunning the study rather than editing by hand.\n')
    body = yaml.safe_dump({'provenance': provenance,
                           'model': sections.get('model') or {},
                           'train': sections.get('train') or {}}, sort_keys=False,
                          allow_unicode=True, width=100)
    return atomic_write(path, head + body)  # no .tmp left behind, even on a full disk


def _git_commit() -> str:
    """``<sha>`` (``+dirty`` when the checkout has changes) of the package's checkout."""
    where = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=where, capture_output=True,
                             text=True, timeout=20)
        if sha.returncode != 0:
            return 'unknown (not a git checkout)'
        status = subprocess.run(['git', 'status', '--porcelain'], cwd=where,
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 'unknown (git failed)'
    return sha.stdout.strip() + ('+dirty' if status.stdout.strip() else '')


def _hide_password(url: str) -> str:
    return re.sub(r'(://[^:/@]+:)[^@]*@', r'\1***@', url)
