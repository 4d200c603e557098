"""The dataset builder (mmssl_pyg.data.builder), its encoders and the MovieLens-100K recipe.

Expected counts are worked out by hand in the comments; the encoders used here are small
deterministic functions, except in the one test that loads the real all-MiniLM-L6-v2 (skipped
when the `features` extra is not installed)."""
from __future__ import annotations

import numpy as np
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


def _stats():
    return {'name': 'toy', 'users': 4, 'items': 5, 'train': 6, 'val': 2, 'test': 2,
            'interactions': 10, 'sparsity': 0.7, 'modalities': {'text': 3}}


def test_build_summary_lists_every_count_in_full(tmp_path):
    from mmssl_pyg.data.build_output import BuildResult
    from mmssl_pyg.data.stats import format_stats

    counts = {'rows': 12_345, 'below_min_rating': 1_200, 'duplicates': 3, 'kcore': 5,
              'kcore_interactions': 4_321, 'kcore_users': 17, 'kcore_items': 1_002,
              'catalog_items_unused': 2_000, 'users_train_only': 9}
    result = BuildResult(tmp_path, _stats(), counts, {'text': 'encoded', 'image': 'cache file'})
    assert result.summary() == '\n'.join([
        f'built {tmp_path}',
        '  rows read: 12,345',
        '  below the minimum rating: 1,200 removed',
        '  repeated (user, item) pairs merged: 3',
        '  5-core: removed 4,321 interactions (17 users, 1,002 items)',
        '  item-table rows without a kept interaction: 2,000 (not in the dataset)',
        '  users without held-out items (too few interactions): 9',
        '  text features: encoded',
        '  image features: cache file',
        format_stats(_stats())])
    # no rating filter, no k-core, no item table: those lines are left out; 0 is still shown
    counts = {'rows': 7, 'below_min_rating': None, 'duplicates': 0, 'kcore': 0,
              'catalog_items_unused': None, 'users_train_only': 0}
    assert BuildResult(tmp_path, _stats(), counts).summary() == '\n'.join([
        f'built {tmp_path}', '  rows read: 7', '  repeated (user, item) pairs merged: 0',
        '  users without held-out items (too few interactions): 0', format_stats(_stats())])
    counts = {'rows': 1, 'below_min_rating': 0, 'duplicates': 0, 'catalog_items_unused': 0,
              'users_train_only': 0}
    assert BuildResult(tmp_path, _stats(), counts).summary().splitlines()[2:5] == [
        '  below the minimum rating: 0 removed', '  repeated (user, item) pairs merged: 0',
        '  item-table rows without a kept interaction: 0 (not in the dataset)']


def _old_files(root):
    raw = root / 'raw'
    raw.mkdir(parents=True)
    for name in ('train.json', 'val.json', 'test.json', 'id_map.json', 'text_feat.npy',
                 'audio_feat.npy', 'notes.txt'):
        (raw / name).write_text(name)
    (root / 'build_info.json').write_text('{}')
    (root / 'processed').mkdir()
    (root / 'encoder_cache').mkdir()


def test_an_existing_dataset_is_named_and_kept_unless_overwrite(tmp_path):
    import os

    from mmssl_pyg.data.build_output import _old_dataset, _prepare_output

    root = tmp_path / 'ds'
    _prepare_output(root, overwrite=False)  # nothing there: nothing to refuse
    assert _old_dataset(root) == []
    _old_files(root)
    assert [str(p.relative_to(root)) for p in _old_dataset(root)] == [
        'raw/train.json', 'raw/val.json', 'raw/test.json', 'raw/id_map.json', 'build_info.json',
        'processed', 'raw/audio_feat.npy', 'raw/text_feat.npy']
    with pytest.raises(OutputExistsError) as err:
        _prepare_output(root, overwrite=False)
    assert str(err.value) == (
        f'{root} already holds a dataset (raw/train.json, raw/val.json, raw/test.json, '
        'raw/id_map.json, ...); nothing was overwritten. Fix: pass --force (overwrite=True) to '
        'replace it, or choose another output folder')
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, ValueError)
    _prepare_output(root, overwrite=True)
    assert (root / 'raw' / 'train.json').exists()
    for p in _old_dataset(root)[:4]:
        p.unlink()
    (root / 'raw' / 'text_feat.npy').unlink()
    os.symlink(root / 'nowhere', root / 'raw' / 'val.json')  # a broken link counts too
    with pytest.raises(OutputExistsError) as err:
        _prepare_output(root, overwrite=False)
    assert str(err.value).startswith(f'{root} already holds a dataset (raw/val.json, '
                                     'build_info.json, processed/, raw/audio_feat.npy); '
                                     'nothing was overwritten.')


def test_staging_folder_replaces_only_dead_builds_folders(tmp_path):
    import os

    from mmssl_pyg.data.build_output import _staging_dir
    from mmssl_pyg.utils.io import OutputError

    root = tmp_path / 'new' / 'ds'
    stage = _staging_dir(root)  # creates the parent
    assert stage.parent == root.parent and stage.is_dir() and list(stage.iterdir()) == []
    assert stage.name.startswith(f'.ds.build-{os.getpid()}-')
    parent = root.parent
    dead = parent / '.ds.build-999999999-abcd'
    (dead / 'raw').mkdir(parents=True)
    alive = parent / f'.ds.build-{os.getppid()}-abcd'
    alive.mkdir()
    other = parent / '.dsx.build-999999999-abcd'  # another dataset's
    other.mkdir()
    no_pid = parent / '.ds.build-x1-abcd'
    no_pid.mkdir()
    a_file = parent / '.ds.build-999999998-abcd'
    a_file.write_text('not a folder')
    (parent / 'target').mkdir()
    a_link = parent / '.ds.build-999999997-abcd'
    a_link.symlink_to(parent / 'target')
    second = _staging_dir(root)
    assert not dead.exists() and second != stage
    assert all(p.exists() for p in (alive, other, no_pid, a_file, a_link, stage))
    blocked = tmp_path / 'file'
    blocked.write_text('x')
    with pytest.raises(OutputError) as err:
        _staging_dir(blocked / 'sub' / 'ds')
    assert str(err.value) == (f'cannot create a folder in {blocked / "sub"}: a part of the '
                              'path is a file, not a folder. Fix: choose a path whose parent '
                              'folders are folders')


def test_written_dataset_is_swapped_in_and_a_failed_swap_puts_the_old_one_back(
        tmp_path, monkeypatch):
    import json
    import shutil

    import numpy as np

    from mmssl_pyg.data import build_output
    from mmssl_pyg.data.build_output import _staging_dir, _swap_in, _write_output
    from mmssl_pyg.utils.io import OutputError

    root = tmp_path / 'ds'
    _old_files(root)
    splits = {'train': {0: [1, 2]}, 'val': {0: [3]}, 'test': {1: [0]}}
    info = {'built': 'now'}
    stage = _staging_dir(root)
    _write_output(stage, splits, {'text': np.array([[1.5, 2.0]])}, {'user': ['A']}, info)
    assert sorted(p.name for p in (stage / 'raw').iterdir()) == [
        'id_map.json', 'test.json', 'text_feat.npy', 'train.json', 'val.json']
    real_replace = build_output.os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 10:  # 8 old entries moved aside, 1 new file placed, then a failure
            raise OSError(28, 'No space left on device')
        real_replace(src, dst)

    monkeypatch.setattr(build_output.os, 'replace', failing_replace)
    with pytest.raises(OutputError) as err:
        _swap_in(stage, root)
    monkeypatch.setattr(build_output.os, 'replace', real_replace)
    assert str(err.value) == (f'cannot replace the dataset in {root}: no space left on device. '
                              'Fix: free disk space (or write elsewhere) and run the command '
                              'again; existing files were left unchanged')
    assert calls[8] == root / 'raw' / 'id_map.json'  # the new file placed before the failure
    assert (root / 'raw' / 'id_map.json').read_text() == 'id_map.json'  # the old one is back
    assert (root / 'raw' / 'train.json').read_text() == 'train.json'
    assert (root / 'raw' / 'text_feat.npy').read_text() == 'text_feat.npy'
    assert (root / 'raw' / 'audio_feat.npy').read_text() == 'audio_feat.npy'
    assert (root / 'processed').is_dir() and (root / 'build_info.json').read_text() == '{}'
    assert [p.name for p in tmp_path.iterdir() if '.old-' in p.name] == []
    shutil.rmtree(stage)  # what the builder does after a failure (the placed file is gone)
    stage = _staging_dir(root)
    _write_output(stage, splits, {'text': np.array([[1.5, 2.0]])}, {'user': ['A']}, info)
    _swap_in(stage, root)
    raw = root / 'raw'
    assert json.loads((raw / 'train.json').read_text()) == {'0': [1, 2]}
    assert json.loads((raw / 'val.json').read_text()) == {'0': [3]}
    assert json.loads((raw / 'test.json').read_text()) == {'1': [0]}
    assert json.loads((raw / 'id_map.json').read_text()) == {'user': ['A']}
    feat = np.load(raw / 'text_feat.npy')
    assert feat.dtype == np.float32 and feat.tolist() == [[1.5, 2.0]]
    assert json.loads((root / 'build_info.json').read_text()) == info
    assert not (raw / 'audio_feat.npy').exists() and not (root / 'processed').exists()
    # the user's own files stay
    assert (raw / 'notes.txt').read_text() == 'notes.txt' and (root / 'encoder_cache').is_dir()
    # every new file was moved out of the staging folder (the builder deletes it), and the
    # old files' folder is gone
    assert list((stage / 'raw').iterdir()) == [] and not (stage / 'build_info.json').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['ds', stage.name])


def test_item_texts_join_or_format_the_text_columns():
    from mmssl_pyg.data.build_output import item_texts
    from mmssl_pyg.data.table import Table
    from mmssl_pyg.data.validation import DatasetFormatError

    table = Table({'item': ['i1', 'i2', 'i3'], 'title': [' Alpha ', 'Beta', ''],
                   'year': ['1999', '', '2001']}, 'items.csv', 'csv')
    assert item_texts(table, ['title', 'year']) == ['Alpha. 1999', 'Beta', '2001']
    assert item_texts(table, ['year', 'title'], rows=[2, 0]) == ['2001', '1999. Alpha']
    assert item_texts(table, ['title', 'year'], '{title} ({year})', rows=[0, 1]) == [
        'Alpha (1999)', 'Beta ()']
    with pytest.raises(ValueError) as err:
        item_texts(table, ['title'], '{title')
    assert str(err.value) == ("text template '{title' is not a valid format string (expected "
                              "'}' before end of string); write columns as {name}")
    with pytest.raises(ValueError) as err:
        item_texts(table, ['title'], '{title} {year} {genre}')
    assert str(err.value) == ("text template '{title} {year} {genre}' names ['year', 'genre'], "
                              "which are not among the text columns ['title']; add them to "
                              "--text-cols")
    with pytest.raises(DatasetFormatError) as err:
        item_texts(table, ['title'], id_col='item')
    assert str(err.value) == (
        "items.csv [column \"title\"]: 1 item(s) have no text (items 'i3'; first at line 4). "
        'Fix: write a text for every item, or remove those items from both tables')
    with pytest.raises(DatasetFormatError) as err:
        item_texts(Table({'a': [' ', 'x', ''], 'b': ['', 'y', '\t']}), ['a', 'b'])
    assert str(err.value) == (
        '<table> [column "a", column "b"]: 2 item(s) have no text (first at row 0). Fix: write '
        'a text for every item, or remove those items from both tables')
    with pytest.raises(DatasetFormatError) as err:
        item_texts(table, ['genre'])
    assert err.value.fix == 'name the right column with --text-cols'


def test_image_paths_are_read_from_the_root_or_the_tables_folder(tmp_path, monkeypatch):
    from mmssl_pyg.data.build_output import _image_paths
    from mmssl_pyg.data.table import Table
    from mmssl_pyg.data.validation import DatasetFormatError

    (tmp_path / 'img').mkdir()
    for name in ('a.jpg', 'b.jpg'):
        (tmp_path / 'img' / name).write_bytes(b'x')
    source = str(tmp_path / 'items.csv')
    table = Table({'item': ['i1', 'i2', 'i3'], 'image': [' img/a.jpg', str(tmp_path / 'img' /
                                                                            'b.jpg'), 'c.jpg']},
                  source, 'csv')
    assert _image_paths(table, 'image', None, [1, 0], 'item') == [
        tmp_path / 'img' / 'b.jpg', tmp_path / 'img' / 'a.jpg']
    (tmp_path / 'img' / 'c.jpg').write_bytes(b'x')
    assert _image_paths(table, 'image', tmp_path / 'img', [2], 'item') == [
        tmp_path / 'img' / 'c.jpg']
    monkeypatch.chdir(tmp_path)
    memory = Table({'item': ['i1'], 'image': ['img/a.jpg']})
    assert _image_paths(memory, 'image', None, [0], 'item') == [tmp_path / 'img' / 'a.jpg']
    fix = ("give an existing image path for every item (relative paths are read from "
           "--image-root, else the item table's folder)")
    with pytest.raises(DatasetFormatError) as err:
        _image_paths(table, 'image', None, [0, 2, 1], 'item')
    assert str(err.value) == (
        f"{source} [column \"image\"]: 1 item(s) have no image file (first: item 'i3' at "
        f"line 4: 'c.jpg' -> {tmp_path / 'c.jpg'} does not exist). Fix: {fix}")
    blank = Table({'item': ['i1', 'i2'], 'pic': ['img/a.jpg', '  ']}, source, 'csv')
    with pytest.raises(DatasetFormatError) as err:
        _image_paths(blank, 'pic', None, [0, 1], 'item')
    assert str(err.value) == (f"{source} [column \"pic\"]: 1 item(s) have no image file "
                              f"(first: item 'i2' at line 3: ''). Fix: {fix}")
    with pytest.raises(DatasetFormatError) as err:
        _image_paths(blank, 'image', None, [0], 'item')
    assert err.value.fix == 'name the right column with --image-col'


# ---- mmssl_pyg/data/builder.py (test_builder.py is selected for mutation testing test by
# ---- test; the builder's checks and records are tested here)

def test_build_request_defaults_and_checks_in_full(tmp_path, monkeypatch):
    from pathlib import Path

    from mmssl_pyg.data.builder import BuildRequest

    request = BuildRequest('i.csv', tmp_path / 'x' / '..' / 'ds')
    assert (request.items, request.user_col, request.item_col, request.rating_col,
            request.time_col, request.item_id_col, request.text_cols, request.text_template,
            request.image_col, request.image_root, request.min_rating, request.kcore,
            request.split, request.ratios, request.seed, request.text_encoder,
            request.image_encoder, request.image_weights, request.image_model,
            request.batch_size, request.device, request.cache_dir, request.sep,
            request.overwrite, request.progress, request.name, request.sources) == (
        None, 'user_id', 'item_id', None, None, None, (), None, None, None, None, 0, 'random',
        (0.8, 0.1, 0.1), 0, None, None, None, 'resnet50', 64, 'cpu', None, None, False, True,
        None, None)
    assert request.id_col == 'item_id'
    assert request.check() == (0.8, 0.1, 0.1)
    assert request.name == 'ds' and request.text_cols == []
    named = BuildRequest('i.csv', 'out', item_id_col='sku', text_cols=('t',), items='t.csv',
                         name='mine', ratios=['0.5', 0.25, 0.25])
    assert named.check() == (0.5, 0.25, 0.25) and named.text_cols == ['t']
    assert (named.name, named.id_col) == ('mine', 'sku')
    monkeypatch.setenv('HOME', str(tmp_path))
    assert BuildRequest('i.csv', '~/ds').root == Path(str(tmp_path)) / 'ds'

    def problem(**options):
        with pytest.raises(ValueError) as err:
            BuildRequest('i.csv', **{'output': 'out', **options}).check()
        return str(err.value)

    assert problem(output=' ') == ('--output / output is empty: it would name the current '
                                   'folder. Fix: give a folder path, e.g. datasets/my-data')
    assert problem(cache_dir='') == ('--cache-dir / cache_dir is empty: it would name the '
                                     'current folder. Fix: give a folder path, e.g. '
                                     'datasets/my-data')
    assert problem(split='time') == "split must be one of ('random', 'temporal'), got 'time'"
    assert problem(split='temporal') == ("split='temporal' needs the timestamp column: pass "
                                         '--time-col / time_col=NAME')
    assert problem(min_rating=4) == ('min_rating needs the rating column: pass --rating-col / '
                                     'rating_col=NAME')
    assert problem(kcore=-1) == 'kcore must be >= 0, got -1'
    no_items = 'text and image features come from the item table: pass --items / items=FILE'
    assert problem(text_cols=['t']) == no_items and problem(image_col='img') == no_items
    assert problem(items='t.csv', text_template='{t}') == (
        'text_template needs the text columns: pass --text-cols / text_cols')
    # accepted at the limits
    BuildRequest('i.csv', 'out', split='temporal', time_col='ts', rating_col='r', min_rating=0,
                 kcore=0).check()
    assert BuildRequest('i.csv', 'out', ratios=(0.8, 0.1, 0.1 + 5e-7)).check()[2] == 0.1 + 5e-7
    for ratios in ((0.5, 0.5), (-0.1, 0.6, 0.5), (0, 0.5, 0.5), (0.8, 0.1, 0.2), ('a', 0, 0),
                   None, (0.8, 0.1, 0.1 + 2e-6)):
        assert problem(ratios=ratios) == ('ratios must be three fractions train, val, test that '
                                          'sum to 1 with train > 0, e.g. 0.8,0.1,0.1; got '
                                          f'{ratios!r}')


def test_build_info_id_map_and_encoder_notes_in_full(tmp_path):
    import json

    from mmssl_pyg.testing import THIRDS, CountingEncoder

    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS)
    items = _write_csv(tmp_path / 'items.csv', ['item', 'title', 'tag'], ITEMS)
    enc = CountingEncoder()
    out = tmp_path / 'ds'
    result = _build((inter, items), out, items=items, text_cols=['title', 'tag'],
                    text_encoder=enc)
    # 11 rows; A-i4 rated 2 (below 4); B-i1 twice (merged); the 2-core drops D, then i5, then
    # C: A and B keep i1, i2, i3 (3 interactions each: one per split at 1/3 each)
    counts = {'rows': 11, 'below_min_rating': 1, 'duplicates': 1, 'kcore': 2,
              'kcore_interactions': 3, 'kcore_users': 2, 'kcore_items': 1,
              'users_train_only': 0, 'catalog_items_unused': 3}
    assert result.counts == counts
    assert result.encoded == {'text': f'encoded with {enc!r}'}
    stats = {'users': 2, 'items': 3, 'train': 2, 'val': 2, 'test': 2, 'interactions': 6,
             'sparsity': 1 - 2 / 6, 'modalities': {'text': 3}}
    assert result.stats == {'name': 'ds', **stats}
    assert json.loads((out / 'build_info.json').read_text()) == {
        'name': 'ds',
        'sources': {'interactions': str(inter), 'items': str(items)},
        'options': {'user_col': 'user', 'item_col': 'item', 'rating_col': 'rating',
                    'time_col': 'ts', 'item_id_col': None, 'text_cols': ['title', 'tag'],
                    'text_template': None, 'image_col': None, 'min_rating': 4, 'kcore': 2,
                    'split': 'random', 'ratios': list(THIRDS), 'seed': 0},
        'modalities': {'text': {'dim': 3, 'columns': ['title', 'tag'], 'template': None,
                                'encoder': repr(enc)}},
        'counts': counts,
        'stats': stats}
    assert json.loads((out / 'raw' / 'id_map.json').read_text()) == {
        'user_column': 'user', 'item_column': 'item', 'users': {'A': 0, 'B': 1},
        'items': {'i1': 0, 'i2': 1, 'i3': 2}}
    # [length, a's, vowels]: 'Alpha. space' (12, 3, 4: a a a e), 'Beta' (4, 1, 2: e a; its tag
    # is empty), 'Gamma. sea' (10, 3, 4: a a e a)
    assert np.load(out / 'raw' / 'text_feat.npy').tolist() == [[12, 3, 4], [4, 1, 2],
                                                                [10, 3, 4]]
    again = _build((inter, items), out, items=items, text_cols=['title', 'tag'],
                   text_encoder=enc, overwrite=True, sources={'data': 'elsewhere'},
                   name='named')
    cache = next((out / 'cache').iterdir())
    assert again.encoded == {'text': f'read from cache {cache}'} and enc.calls == 1
    info = json.loads((out / 'build_info.json').read_text())
    assert info['sources'] == {'data': 'elsewhere'} and info['name'] == 'named'
    # no item table: no features, no 'items' source
    bare = _build((inter, items), tmp_path / 'bare', min_rating=None, kcore=0, rating_col=None)
    info = json.loads((tmp_path / 'bare' / 'build_info.json').read_text())
    assert info['sources'] == {'interactions': str(inter)} and info['modalities'] == {}
    assert bare.counts == {'rows': 11, 'duplicates': 1, 'users_train_only': 1}
    assert bare.encoded == {}


def test_builder_messages_in_full(tmp_path):
    from mmssl_pyg.data.builder import build_dataset
    from mmssl_pyg.data.validation import DatasetFormatError

    inter = _write_csv(tmp_path / 'inter.csv', ['user', 'item', 'rating', 'ts'], ROWS)

    def error(table=inter, **options):
        with pytest.raises(DatasetFormatError) as err:
            build_dataset(table, tmp_path / 'out', user_col='user', item_col='item',
                          progress=False, **options)
        assert not (tmp_path / 'out').exists()
        return str(err.value)

    empty = _write_csv(tmp_path / 'empty.csv', ['user', 'item'], [])
    assert error(empty) == (f'{empty} [rows]: the table has no interaction. Fix: give one row '
                            'per (user, item) interaction')
    assert error(rating_col='rating', min_rating=6) == (
        f'{inter} [column "rating"]: no row has a rating >= 6. Fix: lower --min-rating / '
        'min_rating')
    assert error(kcore=4) == (f'{inter} [interactions]: the 4-core is empty: no user and item '
                              'have 4 interactions together. Fix: lower --kcore / kcore')
    assert error(ratios=(0.5, 0.25, 0.25), kcore=0, rating_col='rating', min_rating=5) == (
        f'{inter} [interactions]: the val split is empty: every user has too few interactions '
        'to hold one out with ratios (0.5, 0.25, 0.25). Fix: raise --kcore (5 gives every user '
        'a val and a test item at 8:1:1) or the held-out ratios')
    dup = _write_csv(tmp_path / 'dup.csv', ['item', 'title'],
                     [('i1', 'a'), ('i2', 'b'), ('i1', 'c'), ('i2', 'd'), ('i3', 'e')])
    assert error(items=dup, text_cols=['title']) == (
        f"{dup} [column \"item\"]: 2 item id(s) appear on more than one row (first: 'i1' at "
        'line 2). Fix: give each item one row')
    few = _write_csv(tmp_path / 'few.csv', ['sku', 'title'], [('i1', 'a'), ('i9', 'z')])
    assert error(items=few, item_id_col='sku', text_cols=['title']) == (
        f'{inter} [column "item"]: 4 item id(s) have no row in the item table {few} (column '
        "\"sku\"): 'i2', 'i3', 'i4', 'i5'. Fix: add those items to the item table, remove their "
        'interactions, or name the matching id columns with --item-col / --item-id-col')


def test_builder_keeps_the_latest_pair_orders_ids_and_notes_the_kept_cache(tmp_path,
                                                                           monkeypatch):
    import errno
    import json

    from mmssl_pyg.data import builder
    from mmssl_pyg.data.builder import build_dataset
    from mmssl_pyg.data.encoders import EncoderError
    from mmssl_pyg.testing import CountingEncoder

    # user 10 rates a at times 1 and 10, b at 5, c at 6: with a's latest time kept the
    # temporal split holds out a (test) and c (val); users are indexed 2, 9, 10 (as numbers)
    rows = {'user': ['10', '10', '10', '10', '9', '9', '9', '2', '2', '2'],
            'item': ['a', 'b', 'c', 'a', 'a', 'b', 'c', 'a', 'b', 'c'],
            'ts': ['1', '5', '6', '10', '1', '2', '3', '1', '2', '3']}
    third = (1 / 3, 1 / 3, 1 / 3)
    out = tmp_path / 'ds'
    build_dataset(rows, out, user_col='user', item_col='item', time_col='ts', split='temporal',
                  ratios=third, progress=False)
    raw = out / 'raw'
    assert json.loads((raw / 'id_map.json').read_text())['users'] == {'2': 0, '9': 1, '10': 2}
    split = {s: json.loads((raw / f'{s}.json').read_text())['2'] for s in ('train', 'val',
                                                                           'test')}
    assert split == {'train': [1], 'val': [2], 'test': [0]}  # items a=0, b=1, c=2
    items = {'item': ['a', 'b', 'c'], 'title': ['x', 'y', 'z']}
    enc = CountingEncoder()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(builder, '_write_checked', full_disk)
    cache = tmp_path / 'enc-cache'
    with pytest.raises(OSError) as err:
        build_dataset(rows, tmp_path / 'b', items, user_col='user', item_col='item',
                      text_cols=['title'], text_encoder=enc, cache_dir=str(cache),
                      ratios=third, progress=False)
    assert err.value.__notes__ == [
        '(the encoder outputs computed before the failure were kept for the retry: 1 file(s) '
        f'in {cache}; delete them to undo)']
    assert [p.name[:5] for p in cache.iterdir()] == ['text-']
    # a text model given as a path is a SentenceEncoder of that folder (checked before any
    # encoding)
    with pytest.raises(EncoderError, match=r"^text model folder '.*nowhere' does not exist"):
        build_dataset(rows, tmp_path / 'c', items, user_col='user', item_col='item',
                      text_cols=['title'], text_encoder=str(tmp_path / 'nowhere'),
                      ratios=third, progress=False)
    made = []
    monkeypatch.setattr(builder, 'torchvision_image_encoder',
                        lambda *a, **kw: made.append((a, kw)) or (
                            lambda paths: np.ones((len(paths), 2))))
    (tmp_path / 'x.png').write_bytes(b'x')
    with pytest.raises(OSError):
        build_dataset(rows, tmp_path / 'd', {'item': ['a', 'b', 'c'], 'img': ['x.png'] * 3},
                      user_col='user', item_col='item', image_col='img', image_root=tmp_path,
                      image_model='vit_b_16', image_weights='w.pt', batch_size=5,
                      device='cpu', ratios=third, progress=False)
    assert made == [(('vit_b_16', 'w.pt'), {'batch_size': 5, 'device': 'cpu',
                                            'progress': False})]


def test_a_text_model_folder_is_loaded_with_the_builds_settings(tables, tmp_path, monkeypatch,
                                                                capsys):
    import json
    import re
    import sys
    import types

    import torch

    made, chunks = [], []

    class Model:  # a stand-in for sentence_transformers.SentenceTransformer
        def __init__(self, path, **kwargs):
            made.append((path, kwargs))

        def encode(self, chunk, **kwargs):
            chunks.append((len(chunk), kwargs['batch_size']))
            return [[float(len(t)), 1.0] for t in chunk]

    monkeypatch.setitem(sys.modules, 'sentence_transformers',
                        types.SimpleNamespace(SentenceTransformer=Model))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # 'auto' picks CUDA
    folder = tmp_path / 'minilm'
    folder.mkdir()
    (folder / 'modules.json').write_text('[]')
    _, items = tables
    out = tmp_path / 'out'
    res = _build(tables, out, items=items, item_id_col='item', text_cols=['title'],
                 text_encoder=str(folder), batch_size=1, device='auto', progress=True)
    n = res.stats['items']
    assert made == [(str(folder.resolve()), {'device': 'cuda', 'local_files_only': True})]
    assert chunks == [(1, 1)] * n  # one text per forward pass: the build's batch size
    feat = np.load(out / 'raw' / 'text_feat.npy')
    assert feat.shape == (n, 2) and (feat[:, 1] == 1).all()
    info = json.loads((out / 'build_info.json').read_text())
    assert info['modalities']['text']['encoder'] == (
        f'SentenceEncoder({folder.resolve()}, device=cuda)')
    assert re.search(r'(^|\r)text features: ', capsys.readouterr().err)
    _build(tables, tmp_path / 'quiet', items=items, item_id_col='item', text_cols=['title'],
           text_encoder=folder, progress=False)  # another output: its own encoder cache
    assert len(made) == 2 and 'text features' not in capsys.readouterr().err


def test_build_info_names_the_image_column(tables, tmp_path):
    import json

    import torch
    from PIL import Image

    inter, _ = tables
    (tmp_path / 'img').mkdir()
    for item in ('i1', 'i2', 'i3', 'i4', 'i5'):
        Image.new('RGB', (4, 4), (10, 20, 30)).save(tmp_path / 'img' / f'{item}.png')
    items = _write_csv(tmp_path / 'items_img.csv', ['item', 'picture'],
                       [(f'i{k}', f'img/i{k}.png') for k in range(1, 6)])
    from mmssl_pyg.data.encoders import ImageEncoder

    encoder = ImageEncoder(torch.nn.Flatten(), 'flat', resize=2, size=2, progress=False)
    out = tmp_path / 'out'
    _build((inter, items), out, items=items, item_id_col='item', image_col='picture',
           image_encoder=encoder)
    info = json.loads((out / 'build_info.json').read_text())
    assert info['modalities'] == {'image': {'dim': 12, 'column': 'picture',
                                            'encoder': 'ImageEncoder(flat, device=cpu)'}}


def test_a_failed_write_names_the_staging_folder_and_the_fix(tmp_path, monkeypatch):
    import errno

    from mmssl_pyg.data import build_output
    from mmssl_pyg.utils.io import OutputError

    def full_disk(file, arr):  # a write error carries no file name
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(build_output.np, 'save', full_disk)
    stage = tmp_path / 'stage'
    stage.mkdir()
    splits = {s: {0: [0]} for s in ('train', 'val', 'test')}
    with pytest.raises(OutputError) as err:
        build_output._write_output(stage, splits, {'text': np.ones((1, 2))}, {}, {})
    assert str(err.value) == (f'cannot write the new dataset {stage}: no space left on device. '
                              'Fix: free disk space (or write elsewhere) and run the command '
                              'again; existing files were left unchanged')


def test_a_read_back_that_differs_is_reported_as_a_bug_and_nothing_is_left(tables, tmp_path,
                                                                            monkeypatch):
    from mmssl_pyg.data import builder

    res = _build(tables, tmp_path / 'good')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good', 'inter.csv', 'items.csv']
    real, seen = builder.dataset_stats, []

    def one_user_fewer(data):  # a read-back that lost a user (the counts of each split agree)
        stats = real(data)
        stats['users'] -= 1
        seen.append(stats)
        return stats

    monkeypatch.setattr(builder, 'dataset_stats', one_user_fewer)
    with pytest.raises(RuntimeError) as err:
        _build(tables, tmp_path / 'bad')
    s = res.stats
    expected = {'train': s['train'], 'val': s['val'], 'test': s['test']}
    assert str(err.value) == (f'{tmp_path / "bad"}: the folder read back ({seen[0]}) differs '
                              f'from what was built ({s["users"]} users, {s["items"]} items, '
                              f'{expected}); please report this bug')
    # the staging folder is removed and nothing was swapped in
    assert sorted(p.name for p in tmp_path.iterdir()) == ['good', 'inter.csv', 'items.csv']


def test_the_old_files_go_aside_to_a_hidden_sibling_and_other_failures_pass_through(
        tmp_path, monkeypatch):
    """The old dataset is moved into a new hidden folder next to ``root`` (renames within one
    file system), ``.<name>.old-*``; a failure that is not an OS error is re-raised as it is,
    after the old files are put back."""
    from pathlib import Path

    from mmssl_pyg.data import build_output
    from mmssl_pyg.data.build_output import _staging_dir, _swap_in, _write_output

    root = tmp_path / 'ds'
    _old_files(root)
    stage = _staging_dir(root)
    _write_output(stage, {'train': {0: [1]}, 'val': {0: [2]}, 'test': {0: [0]}},
                  {'text': np.array([[1.0]])}, {'user': ['A']}, {})
    real_replace = build_output.os.replace
    calls, bug = [], RuntimeError('a bug')

    def failing_replace(src, dst):
        calls.append(Path(dst))
        if len(calls) == 10:
            raise bug
        real_replace(src, dst)

    monkeypatch.setattr(build_output.os, 'replace', failing_replace)
    with pytest.raises(RuntimeError) as err:
        _swap_in(stage, root)
    assert err.value is bug
    aside = {p.parent for p in calls[:8] if p.name == 'build_info.json'}.pop()
    assert aside.parent == tmp_path and aside.name.startswith('.ds.old-')
    assert all(aside in p.parents for p in calls[:8])
    assert (root / 'raw' / 'train.json').read_text() == 'train.json'
    assert (root / 'build_info.json').read_text() == '{}'


def test_build_info_is_written_indented_by_two_spaces(tmp_path):
    from mmssl_pyg.data.build_output import _write_info
    _write_info(tmp_path, {'a': 1, 'b': [2]})
    assert (tmp_path / 'build_info.json').read_text() == '{\n  "a": 1,\n  "b": [\n    2\n  ]\n}'


def test_five_existing_entries_are_named_four_and_an_ellipsis(tmp_path):
    from mmssl_pyg.data.build_output import _old_dataset, _prepare_output

    root = tmp_path / 'ds'
    _old_files(root)
    for p in _old_dataset(root)[5:]:  # 'processed' and the two feature files
        p.rmdir() if p.is_dir() else p.unlink()
    assert len(_old_dataset(root)) == 5
    with pytest.raises(OutputExistsError) as err:
        _prepare_output(root, overwrite=False)
    assert str(err.value).startswith(
        f'{root} already holds a dataset (raw/train.json, raw/val.json, raw/test.json, '
        'raw/id_map.json, ...); nothing was overwritten.')


def test_the_staging_folder_creates_missing_parent_folders(tmp_path):
    from mmssl_pyg.data.build_output import _staging_dir

    root = tmp_path / 'a' / 'b' / 'ds'
    stage = _staging_dir(root)
    assert stage.is_dir() and stage.parent == tmp_path / 'a' / 'b'
    assert stage.name.startswith('.ds.build-') and list(stage.iterdir()) == []


def test_a_staging_folder_under_a_file_names_the_output_folders_parent(tmp_path):
    from mmssl_pyg.data.build_output import _staging_dir
    from mmssl_pyg.utils.io import OutputError

    (tmp_path / 'f').write_text('x')
    root = tmp_path / 'f' / 'sub' / 'ds'
    with pytest.raises(OutputError) as err:
        _staging_dir(root)
    assert str(err.value) == (f'cannot create a folder in {tmp_path / "f" / "sub"}: a part of '
                              'the path is a file, not a folder. Fix: choose a path whose parent '
                              'folders are folders')


def test_dead_builds_folders_that_cannot_be_removed_do_not_stop_the_build(tmp_path,
                                                                         monkeypatch):
    """Removing a killed build's staging folder is tidying only: a folder that another build
    removed meanwhile, or one that cannot be removed, is skipped, and the build goes on."""
    import errno
    import os
    import shutil

    from mmssl_pyg.data import build_output

    parent = tmp_path / 'out'
    gone = parent / '.ds.build-999999999-abcd'  # removed by a build started at the same time
    (gone / 'raw').mkdir(parents=True)
    stuck = parent / '.ds.build-999999998-abcd'  # on a file system that refuses the delete
    stuck.mkdir()
    (stuck / 'train.json').write_text('{}')
    alive = parent / f'.ds.build-{os.getppid()}-abcd'
    alive.mkdir()
    real_pid_alive, real_rmdir = build_output.pid_alive, os.rmdir

    def removed_meanwhile(pid):
        if pid == 999999999:
            shutil.rmtree(gone)
        return real_pid_alive(pid)

    def refused(path, *args, **kwargs):
        if str(path) == str(stuck):
            raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(build_output, 'pid_alive', removed_meanwhile)
    monkeypatch.setattr(os, 'rmdir', refused)
    stage = build_output._staging_dir(parent / 'ds')
    assert stage.is_dir() and list(stage.iterdir()) == []
    assert stage.name.startswith(f'.ds.build-{os.getpid()}-')
    assert not gone.exists() and stuck.is_dir() and alive.is_dir()
    assert list(stuck.iterdir()) == []  # its files went, only the folder itself stayed


def test_no_free_staging_folder_name_names_the_output_folders_parent(tmp_path, monkeypatch):
    """When every candidate name is taken, tempfile.mkdtemp gives up with an error that has no
    file name (CPython's "No usable temporary directory name found"): the message names the
    folder from the output path instead."""
    import itertools
    import os
    import tempfile

    from mmssl_pyg.data.build_output import _staging_dir
    from mmssl_pyg.utils.io import OutputError

    parent = tmp_path / 'out'
    (parent / f'.ds.build-{os.getpid()}-taken').mkdir(parents=True)  # a live build's: kept
    monkeypatch.setattr(tempfile, '_get_candidate_names', lambda: itertools.repeat('taken'))
    monkeypatch.setattr(tempfile, 'TMP_MAX', 3)  # CPython tries 10,000 names
    with pytest.raises(OutputError) as err:
        _staging_dir(parent / 'ds')
    assert str(err.value) == (f'cannot create a folder in {parent}: No usable temporary '
                              'directory name found')
    assert isinstance(err.value.__cause__, FileExistsError)
    assert err.value.__cause__.filename is None


def _failing_swap(tmp_path, monkeypatch, features, fail_at, unlink_fails=(), replace_fails=(),
                  rmdir_fails=False, error=None):
    """Swap a new dataset into a folder of old files (``_old_files``: 8 entries) with the
    ``fail_at``-th rename failing (disk full, or ``error``), and, during the undo, the unlinks of
    ``unlink_fails`` and the renames back of ``replace_fails`` (names under root) and the
    removal of the aside folder failing too. Returns (root, the error, the aside folder)."""
    import errno
    import os
    from pathlib import Path

    from mmssl_pyg.data import build_output
    from mmssl_pyg.data.build_output import _staging_dir, _swap_in, _write_output
    from mmssl_pyg.utils.io import OutputError

    root = tmp_path / 'ds'
    _old_files(root)
    stage = _staging_dir(root)
    _write_output(stage, {'train': {0: [1, 2]}, 'val': {0: [3]}, 'test': {1: [0]}},
                  features, {'user': ['A']}, {'built': 'now'})
    real_replace, real_unlink, real_rmdir = os.replace, Path.unlink, os.rmdir
    calls = []

    def replace(src, dst):
        calls.append((Path(src), Path(dst)))
        if len(calls) == fail_at:
            raise error or OSError(errno.ENOSPC, 'No space left on device')
        if len(calls) > fail_at and str(Path(dst).relative_to(root)) in replace_fails:
            raise OSError(errno.EIO, 'Input/output error', str(src))
        real_replace(src, dst)

    def unlink(path, *args, **kwargs):
        if path.is_relative_to(root) and str(path.relative_to(root)) in unlink_fails:
            raise OSError(errno.EIO, 'Input/output error', str(path))
        return real_unlink(path, *args, **kwargs)

    def rmdir(path, *args, **kwargs):
        if rmdir_fails and '.ds.old-' in Path(path).name:
            raise OSError(errno.EBUSY, 'Device or resource busy', str(path))
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(build_output.os, 'replace', replace)
    monkeypatch.setattr(Path, 'unlink', unlink)
    monkeypatch.setattr(os, 'rmdir', rmdir)
    with pytest.raises(OutputError) as err:
        _swap_in(stage, root)
    monkeypatch.undo()
    aside = calls[0][1].parent.parent  # raw/train.json went first, into <aside>/raw/
    return root, err.value, aside


_NO_SPACE = ('cannot replace the dataset in {root}: no space left on device. Fix: free disk '
             'space (or write elsewhere) and run the command again; existing files were left '
             'unchanged')
_OLD_NAMES = ['build_info.json', 'encoder_cache', 'processed', 'raw']
_OLD_RAW = ['audio_feat.npy', 'id_map.json', 'notes.txt', 'test.json', 'text_feat.npy',
            'train.json', 'val.json']


def _old_files_are_back(root):
    raw = root / 'raw'
    assert sorted(p.name for p in root.iterdir()) == _OLD_NAMES
    assert sorted(p.name for p in raw.iterdir()) == _OLD_RAW
    assert all((raw / n).read_text() == n for n in _OLD_RAW)
    assert (root / 'build_info.json').read_text() == '{}' and (root / 'processed').is_dir()


def test_a_new_file_the_undo_cannot_delete_is_replaced_by_the_old_one(tmp_path, monkeypatch):
    """8 old entries go aside, then the new id_map.json (renames 9) and test.json (10) are
    placed and text_feat.npy (11) fails; id_map.json cannot be deleted, but the old
    id_map.json is put back over it, so the old dataset is whole and the error is the plain
    one."""
    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'text': np.ones((1, 2))}, 11,
                                     unlink_fails={'raw/id_map.json'})
    assert str(err) == _NO_SPACE.format(root=root)
    _old_files_are_back(root)
    assert not aside.exists()


def test_a_new_file_the_undo_cannot_delete_is_named_in_the_error(tmp_path, monkeypatch):
    """The new image_feat.npy (rename 10, after id_map.json) has no old file of its name: when
    the undo cannot delete it, the old dataset is back but that file is left beside it, and
    the error names it."""
    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'image': np.ones((1, 2))}, 11,
                                     unlink_fails={'raw/image_feat.npy'})
    assert str(err) == (f'cannot replace the dataset in {root} (No space left on device), and '
                        'could not undo it (new files still in it: raw/image_feat.npy). Fix: '
                        'delete those new files, then run the command again')
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == 28
    assert (root / 'raw' / 'image_feat.npy').exists()
    (root / 'raw' / 'image_feat.npy').unlink()  # the fix the message gives
    _old_files_are_back(root)
    assert not aside.exists()


def test_old_files_the_undo_cannot_put_back_are_kept_aside_and_named(tmp_path, monkeypatch):
    """The old train.json and processed/ cannot be moved back: they stay in the aside folder
    (never deleted), the other old files are back, and the error says where they are."""
    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'text': np.ones((1, 2))}, 11,
                                     replace_fails={'raw/train.json', 'processed'})
    assert aside.parent == tmp_path and aside.name.startswith('.ds.old-')
    assert str(err) == (f'cannot replace the dataset in {root} (No space left on device), and '
                        f'could not undo it (old files kept in {aside}: processed, '
                        f'raw/train.json). Fix: move the old files from {aside} back into '
                        f'{root} (same layout), then run the command again')
    assert (aside / 'raw' / 'train.json').read_text() == 'train.json'
    assert (aside / 'processed').is_dir()
    assert not (root / 'raw' / 'train.json').exists() and not (root / 'processed').exists()
    (aside / 'raw' / 'train.json').rename(root / 'raw' / 'train.json')  # the fix
    (aside / 'processed').rename(root / 'processed')
    _old_files_are_back(root)


def test_a_new_file_whose_old_one_is_not_put_back_is_named_with_it(tmp_path, monkeypatch):
    """The new id_map.json cannot be deleted and the old one cannot be moved back over it:
    both are named, the new one as left in the folder, the old one as kept aside."""
    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'text': np.ones((1, 2))}, 11,
                                     unlink_fails={'raw/id_map.json'},
                                     replace_fails={'raw/id_map.json'})
    assert str(err) == (f'cannot replace the dataset in {root} (No space left on device), and '
                        'could not undo it (new files still in it: raw/id_map.json; old files '
                        f'kept in {aside}: raw/id_map.json). Fix: delete those new files and '
                        f'move the old files from {aside} back into {root} (same layout), then '
                        'run the command again')
    assert (root / 'raw' / 'id_map.json').read_text() == '{"user": ["A"]}'  # the new one
    assert (aside / 'raw' / 'id_map.json').read_text() == 'id_map.json'


@pytest.mark.parametrize('error, reason', [(RuntimeError('a bug'), 'a bug'),
                                           (KeyboardInterrupt(), 'KeyboardInterrupt')])
def test_a_bug_or_an_interrupt_with_an_incomplete_undo_is_named(tmp_path, monkeypatch, error,
                                                                 reason):
    """Not only an OS error: whatever stopped the swap, an undo that leaves files behind is
    reported, the cause by its text, or by its type when it has none (Ctrl-C)."""
    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'text': np.ones((1, 2))}, 11,
                                     replace_fails={'build_info.json'}, error=error)
    assert str(err) == (f'cannot replace the dataset in {root} ({reason}), and could not undo '
                        f'it (old files kept in {aside}: build_info.json). Fix: move the old '
                        f'files from {aside} back into {root} (same layout), then run the '
                        'command again')
    assert err.__cause__ is error
    assert (aside / 'build_info.json').read_text() == '{}'


def test_an_aside_folder_that_cannot_be_removed_leaves_the_swap_as_it_was(tmp_path,
                                                                         monkeypatch):
    """Deleting the (then empty) aside folder is tidying: when it fails after a failed swap,
    the error is still the swap's, with the old dataset back; when it fails after a swap that
    worked, the new dataset is in place and no error is raised."""
    import errno
    import json
    import os
    from pathlib import Path

    from mmssl_pyg.data.build_output import _staging_dir, _swap_in, _write_output

    root, err, aside = _failing_swap(tmp_path, monkeypatch, {'text': np.ones((1, 2))}, 11,
                                     rmdir_fails=True)
    assert str(err) == _NO_SPACE.format(root=root)
    _old_files_are_back(root)
    assert aside.is_dir() and list(aside.rglob('*.*')) == []  # no file left in it

    stage = _staging_dir(root)
    _write_output(stage, {'train': {0: [1]}, 'val': {0: [2]}, 'test': {0: [0]}},
                  {'text': np.array([[1.0]])}, {'user': ['B']}, {'built': 'again'})
    real_rmdir = os.rmdir

    def busy(path, *args, **kwargs):
        if '.ds.old-' in Path(path).name:
            raise OSError(errno.EBUSY, 'Device or resource busy', str(path))
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, 'rmdir', busy)
    _swap_in(stage, root)
    monkeypatch.undo()
    assert json.loads((root / 'raw' / 'train.json').read_text()) == {'0': [1]}
    assert json.loads((root / 'raw' / 'id_map.json').read_text()) == {'user': ['B']}
    assert json.loads((root / 'build_info.json').read_text()) == {'built': 'again'}
    assert not (root / 'processed').exists() and (root / 'raw' / 'notes.txt').exists()
