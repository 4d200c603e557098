"""Dataset loaders on the bundled real data, and every bad-input case on small fixture folders.

Every test works on copies under ``tmp_path``: nothing is written into the repository's
``datasets/*/processed`` folders."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmssl_pyg.data import (
    TikTokMini,
    format_stats,
    load_dataset,
)
from mmssl_pyg.testing import copy_raw


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory) -> Path:
    return copy_raw('tiktok-mini', tmp_path_factory.mktemp('mini'))


@pytest.fixture(scope='module')
def baby_root(tmp_path_factory) -> Path:
    return copy_raw('amazon-baby-interactions', tmp_path_factory.mktemp('baby'))


def test_stats_and_table(mini_root, baby_root):
    mini = TikTokMini(root=mini_root)
    baby = load_dataset('amazon-baby-interactions', root=baby_root)
    stats = mini.stats()
    assert stats['sparsity'] == pytest.approx(1 - 6227 / (1000 * 2872))
    assert stats['interactions'] == 6227 + 336 + 664
    table = format_stats(mini, baby)
    lines = table.splitlines()
    assert 'tiktok-mini' in lines[0] and 'amazon-baby-interactions' in lines[0]
    assert any(line.startswith('Users') and '1,000' in line and '19,445' in line
               for line in lines)
    assert any(line.startswith('image dim') and '128' in line and '-' in line for line in lines)
    assert any(line.startswith('Sparsity') and '99.783%' in line for line in lines)
