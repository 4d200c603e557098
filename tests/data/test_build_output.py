"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import pytest

from mmssl_pyg.data import load_dataset
from mmssl_pyg.data.build_output import OutputExistsError
from mmssl_pyg.testing import ITEMS, ROWS, _build, _write_csv


@pytest.fixture
def tables(tmp_path):
    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS)
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'tag'], ITEMS)
    return inter, items


def test_existing_output_is_not_overwritten(tables, tmp_path):
    out = tmp_path / 'ds'
    _build(tables, out)
    load_dataset(str(out), log=False)
    assert (out / 'processed').is_dir()
    with pytest.raises(OutputExistsError, match='nothing was overwritten.*--force'):
        _build(tables, out)
    _build(tables, out, kcore=0, overwrite=True)
    assert not (out / 'processed').exists()  # stale processed files are removed
    assert load_dataset(str(out), log=False).num_users == 4
