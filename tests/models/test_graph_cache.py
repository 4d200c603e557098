"""Adversarial data: crafted processed caches (code execution), raw files edited after the
first load, absurd id ranges, damaged matrices. Each case asserts the exact outcome: a clear
error naming the file and the fix, or the correct data."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.testing import assert_no_marker, payloads, write_torch_payload


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert_no_marker(path)


def test_crafted_graph_cache_file_runs_no_code(tmp_path, marker):
    """FREEDOM / LATTICE keep kNN graphs in a cache folder: the same guarantee holds there."""
    from mmssl_pyg.models import _graph_cache
    x = torch.randn(20, 4)
    key = _graph_cache.feature_key(x, 3, 'cosine-knn')
    write_torch_payload(tmp_path / f'{key}.pt', payloads(marker)['os.system'])
    _graph_cache.clear_memory_cache()
    with pytest.raises(ValueError, match='delete it') as info:
        _graph_cache.cached_graph(x, 3, 'cosine-knn', lambda: {'w': torch.ones(1)},
                                  cache_dir=tmp_path)
    assert f'{key}.pt' in str(info.value) and 'could run code' in str(info.value)


def test_graph_cache_write_on_a_full_disk_leaves_no_partial_or_temporary_file(tmp_path,
                                                                              monkeypatch):
    """The kNN graph cache is written like every other file: temporary file, fsync, rename."""
    from mmssl_pyg.models import _graph_cache
    from mmssl_pyg.utils.io import OutputError
    x = torch.randn(20, 4)
    key = _graph_cache.feature_key(x, 3, 'cosine-knn')
    _graph_cache.clear_memory_cache()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(OutputError, match='No space left|cannot write'):
        _graph_cache.cached_graph(x, 3, 'cosine-knn', lambda: {'w': torch.ones(2)},
                                  cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch, 'save', real_save)
    _graph_cache.clear_memory_cache()
    out = _graph_cache.cached_graph(x, 3, 'cosine-knn', lambda: {'w': torch.ones(2)},
                                    cache_dir=tmp_path)
    assert torch.equal(out['w'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [f'{key}.pt']
