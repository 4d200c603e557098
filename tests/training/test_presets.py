"""Preset layers (``mmssl_pyg/training/presets.py``): the options every model gets on every
dataset, and where each value comes from."""
from __future__ import annotations

import json
from pathlib import Path

from mmssl_pyg.models import MODELS
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


def test_every_model_and_dataset_resolves_as_before_the_dataset_layer():
    before = json.loads(BEFORE.read_text())
    now = json.loads(json.dumps(resolve_all()))  # tuples -> lists, as recorded
    assert sorted(now) == sorted(before)
    changed = {key: (before[key], now[key]) for key in before if now[key] != before[key]}
    assert not changed
