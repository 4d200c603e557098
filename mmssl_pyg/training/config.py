"""Trainer options and the preset loader, under their historical import path.

The options (:class:`TrainConfig`, :data:`OPTION_RULES`, :func:`check_option`) live in
:mod:`mmssl_pyg.training.options`; the presets, ``--config`` files, overrides and
:func:`resolve_options` in :mod:`mmssl_pyg.training.presets`. Both are re-exported here.
"""
from .options import (  # noqa: F401
    DEFAULT_KS,
    METRIC_NAMES,
    NON_RESULT_TRAIN_KEYS,
    OPTION_RULES,
    PRECISIONS,
    RESUMABLE,
    ConfigError,
    Rule,
    TrainConfig,
    check_cutoffs,
    check_keys,
    check_option,
    coerce,
    model_option_types,
    train_option_types,
)
from .presets import (  # noqa: F401
    CONFIG_DIR,
    CONFIG_FILE_KEYS,
    TUNED_DIR,
    RunOptions,
    find_tuned_preset,
    parse_overrides,
    preset_path,
    read_yaml,
    resolve_options,
    tuned_preset_path,
)
