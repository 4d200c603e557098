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


# --------------------------------------------------------------------------- keys, hits, LRU
def test_feature_key_by_hand():
    import hashlib

    from mmssl_pyg.models import _graph_cache
    x = torch.arange(6, dtype=torch.float32).view(3, 2)
    h = hashlib.sha1(b'(3, 2)|torch.float32|4|cosine-knn+self')
    h.update(x.numpy().tobytes())
    assert _graph_cache.feature_key(x, 4, 'cosine-knn+self') == \
        f'cosine-knn_self-k4-{h.hexdigest()[:20]}'  # '+' is not file-name safe
    assert _graph_cache.feature_key(x, 4, 'a_b-c.d').startswith('a_b-c_d-k4-')
    # the shape, the dtype, k, the kind and every byte are part of the key
    keys = {_graph_cache.feature_key(y, k, kind) for y, k, kind in [
        (x, 4, 'knn'), (x.view(2, 3), 4, 'knn'), (x.double(), 4, 'knn'), (x, 5, 'knn'),
        (x, 4, 'knn2'), (x + 1, 4, 'knn')]}
    assert len(keys) == 6
    assert _graph_cache.feature_key(x.t().contiguous().t(), 4, 'knn') == \
        _graph_cache.feature_key(x, 4, 'knn')  # the layout in memory does not matter


def test_memory_cache_hits_and_drops_the_least_recently_used(monkeypatch, tmp_path):
    from mmssl_pyg.models import _graph_cache
    monkeypatch.delenv(_graph_cache.CACHE_ENV, raising=False)
    monkeypatch.setattr(_graph_cache, 'MAX_ENTRIES', 2)
    _graph_cache.clear_memory_cache()
    built = []

    def builder(name):
        def build():
            built.append(name)
            return {'w': torch.full((2,), float(len(built)), requires_grad=True) * 1}
        return build

    xs = {n: torch.full((3, 2), float(i)) for i, n in enumerate('abc')}
    first = _graph_cache.cached_graph(xs['a'], 2, 'knn', builder('a'))
    assert first['w'].tolist() == [1.0, 1.0] and not first['w'].requires_grad  # detached
    again = _graph_cache.cached_graph(xs['a'], 2, 'knn', builder('a'))
    assert torch.equal(again['w'], first['w']) and built == ['a']
    assert _graph_cache.stats == {'hits': 1, 'disk_hits': 0, 'builds': 1}
    _graph_cache.cached_graph(xs['b'], 2, 'knn', builder('b'))
    _graph_cache.cached_graph(xs['a'], 2, 'knn', builder('a'))  # a is now the most recent
    _graph_cache.cached_graph(xs['c'], 2, 'knn', builder('c'))  # drops b, not a
    assert list(_graph_cache._memory) == [_graph_cache.feature_key(xs[n], 2, 'knn')
                                          for n in 'ac']
    _graph_cache.cached_graph(xs['a'], 2, 'knn', builder('a'))
    _graph_cache.cached_graph(xs['b'], 2, 'knn', builder('b'))
    assert built == ['a', 'b', 'c', 'b']
    assert _graph_cache.stats == {'hits': 3, 'disk_hits': 0, 'builds': 4}
    assert not list(tmp_path.iterdir())  # no folder given: nothing on disk
    _graph_cache.clear_memory_cache()
    assert _graph_cache.stats == {'hits': 0, 'disk_hits': 0, 'builds': 0}
    assert not _graph_cache._memory


def test_disk_cache_from_the_argument_or_the_environment(monkeypatch, tmp_path):
    from mmssl_pyg.models import _graph_cache
    x = torch.randn(5, 3)
    key = _graph_cache.feature_key(x, 2, 'knn')
    build = lambda: {'w': torch.arange(3.0)}  # noqa: E731
    env_dir, arg_dir = tmp_path / 'env', tmp_path / 'arg'
    env_dir.mkdir()
    arg_dir.mkdir()
    monkeypatch.setenv(_graph_cache.CACHE_ENV, str(env_dir))
    _graph_cache.clear_memory_cache()
    _graph_cache.cached_graph(x, 2, 'knn', build)  # the environment's folder
    assert [p.name for p in env_dir.iterdir()] == [f'{key}.pt']
    _graph_cache.clear_memory_cache()
    _graph_cache.cached_graph(x, 2, 'knn', build, cache_dir=arg_dir)  # the argument wins
    assert [p.name for p in arg_dir.iterdir()] == [f'{key}.pt']
    assert _graph_cache.stats == {'hits': 0, 'disk_hits': 0, 'builds': 1}
    _graph_cache.clear_memory_cache()

    def fail():
        raise AssertionError('built again')

    out = _graph_cache.cached_graph(x, 2, 'knn', fail, cache_dir=arg_dir)  # read from disk
    assert out['w'].tolist() == [0.0, 1.0, 2.0]
    assert _graph_cache.stats == {'hits': 1, 'disk_hits': 1, 'builds': 0}
    _graph_cache.cached_graph(x, 2, 'knn', fail, cache_dir=arg_dir)  # now from memory
    assert _graph_cache.stats == {'hits': 2, 'disk_hits': 1, 'builds': 0}
    _graph_cache._memory.clear()  # the entries only: the counters keep counting
    _graph_cache.cached_graph(x, 2, 'knn', fail, cache_dir=arg_dir)
    assert _graph_cache.stats == {'hits': 3, 'disk_hits': 2, 'builds': 0}
    _graph_cache.clear_memory_cache()


def test_a_cache_file_without_a_dict_names_the_file_and_fix(tmp_path):
    """A complete file of tensors that is not a dict is not called truncated or damaged
    (the message said so before: the check's error went through the load-error wording)."""
    from mmssl_pyg.models import _graph_cache
    x = torch.randn(5, 3)
    path = tmp_path / f'{_graph_cache.feature_key(x, 2, "knn")}.pt'
    torch.save([torch.ones(1)], path)
    _graph_cache.clear_memory_cache()
    with pytest.raises(ValueError) as err:
        _graph_cache.cached_graph(x, 2, 'knn', lambda: {}, cache_dir=tmp_path)
    assert str(err.value) == (f'graph cache file {str(path)!r} cannot be used (it holds a '
                              f'list, not a dict of tensors). Fix: delete it (it is rebuilt '
                              f'from the item features)')
    assert _graph_cache.stats == {'hits': 0, 'disk_hits': 0, 'builds': 0}
