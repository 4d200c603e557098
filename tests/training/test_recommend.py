"""Adversarial runs and outputs: run folders in use or holding another run, refused resumes,
damaged or malicious checkpoints, checkpoints meeting other data, outputs that exist, are
folders or links, and full disks. Each case asserts the exact outcome, and that nothing was
lost or written where a command was refused."""
from __future__ import annotations

import csv
import os

import pytest

from mmssl_pyg.testing import assert_user_error, no_space_for, run_cli

ROOT_USER = hasattr(os, 'geteuid') and os.geteuid() == 0


@pytest.fixture
def no_compute(monkeypatch):
    """Fail if a recommendation is computed (checks must come first)."""
    import mmssl_pyg.training.run as run_module

    def refuse(*args, **kwargs):
        raise AssertionError('the checkpoint was loaded before the output was checked')

    monkeypatch.setattr(run_module, 'load_run_checkpoint', refuse)


def test_killed_output_write_leaves_a_tmp_file_the_next_write_removes(trained, tmp_path,
                                                                       capsys):
    _, run = trained
    out = tmp_path / 'recs.csv'
    left = tmp_path / '.recs.csv.999999999.0a1b2c3d.tmp'  # a writer killed mid-write
    left.write_text('user,rank,item,sc')
    code, _, err = run_cli(['recommend', run, '--output', out, '-k', '1'], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['recs.csv']


def test_output_that_exists_is_refused_before_any_work(trained, tmp_path, capsys, no_compute):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('mine')
    code, _, err = run_cli(['recommend', run, '--output', out], capsys)
    assert_user_error(code, err, str(out), 'already exists', '--force')
    assert out.read_text() == 'mine'


def test_output_force_replaces_with_a_complete_file(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('mine')
    code, _, err = run_cli(['recommend', run, '--output', out, '--force', '-k', '3'], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 120 * 3 and rows[0].keys() == {'user', 'rank', 'item', 'score'}


@pytest.mark.parametrize('kind,needle', [
    ('folder', 'is a folder'),
    ('link', 'is a symbolic link'),
    ('dangling-link', 'is a symbolic link'),
    ('under-a-file', 'is a file, not a folder'),
    ('suffix', "unsupported type '.txt'"),
    ('empty', 'not a file name'),
])
def test_bad_output_paths_are_refused_before_any_work(kind, needle, trained, tmp_path, capsys,
                                                      no_compute):
    _, run = trained
    target = tmp_path / 'target.csv'
    target.write_text('target')
    out = {'folder': tmp_path, 'link': tmp_path / 'link.csv',
           'dangling-link': tmp_path / 'dangling.csv',
           'under-a-file': target / 'recs.csv', 'suffix': tmp_path / 'recs.txt',
           'empty': ''}[kind]
    if kind == 'link':
        out.symlink_to(target)
    if kind == 'dangling-link':
        out.symlink_to(tmp_path / 'nothing.csv')
    code, _, err = run_cli(['recommend', run, '--output', out, '--force'], capsys)
    assert_user_error(code, err, needle)
    assert target.read_text() == 'target' and not (tmp_path / 'nothing.csv').exists()


def test_output_in_a_new_folder_is_created(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / 'new' / 'deeper' / 'recs.csv'
    code, _, err = run_cli(['recommend', run, '--output', out, '-k', '2'], capsys)
    assert code == 0, err
    assert len(list(csv.DictReader(out.open()))) == 120 * 2


def test_disk_full_on_output_keeps_the_old_file(trained, tmp_path, capsys, monkeypatch):
    _, run = trained
    out = tmp_path / 'recs.csv'
    out.write_text('old recommendations')
    monkeypatch.setattr(os, 'fsync', no_space_for('recs.csv'))
    code, _, err = run_cli(['recommend', run, '--output', out, '--force'], capsys)
    assert_user_error(code, err, 'no space left on device', 'recs.csv')
    assert out.read_text() == 'old recommendations'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['recs.csv']


@pytest.mark.skipif(ROOT_USER, reason='root can write into read-only folders')
def test_output_in_a_read_only_folder_is_refused(trained, tmp_path, capsys, no_compute):
    _, run = trained
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run_cli(['recommend', run, '--output', folder / 'r.csv'], capsys)
    finally:
        folder.chmod(0o700)
    assert_user_error(code, err, 'is not writable')


def test_format_recommendations_lists_each_users_items_best_first_without_the_excluded_tail():
    import torch

    from mmssl_pyg.training.recommend import format_recommendations
    users = torch.tensor([4, 0])
    items = torch.tensor([[7, 2, 5], [1, 3, 0]])
    # user 0 has two unseen items only: recommend pads the row with -inf scores
    scores = torch.tensor([[0.9, 0.5, -1.0], [2.0, 1.5, float('-inf')]])
    assert format_recommendations(users, items, scores) == 'user\titems\n4\t7 2 5\n0\t1 3\n'


def test_format_metrics_table_in_full():
    from mmssl_pyg.training.recommend import format_metrics
    rows = {'val': {'recall@10': 0.5, 'recall@20': 0.75, 'ndcg@20': 0.125},
            'test': {'hit@5': 1.0, 'precision@10': 0.0625}}
    # columns in increasing K whatever the order given; a metric with no value at any K is
    # left out, a missing cell is '-'; the first column is 16 wide, the others 10
    expected = '\n'.join([
        ' ' * 16 + '        @5       @10       @20',
        'val recall      ' + '         -    0.5000    0.7500',
        'val ndcg        ' + '         -         -    0.1250',
        'test precision  ' + '         -    0.0625         -',
        'test hit        ' + '    1.0000         -         -',
    ])
    assert format_metrics(rows, ks=(20, 5, 10)) == expected


def test_write_recommendations_rows_in_full_and_no_replacing_without_force(tmp_path):
    import torch

    from mmssl_pyg.training.recommend import write_recommendations
    from mmssl_pyg.utils.io import OutputError
    users = torch.tensor([3, 1])
    items = torch.tensor([[2, 0], [1, 5]])
    scores = torch.tensor([[0.5, 0.25], [1.5, float('-inf')]])  # user 1: one unseen item
    out = tmp_path / 'recs.csv'
    assert write_recommendations(out, users, items, scores) == out
    assert out.read_bytes() == b'user,rank,item,score\r\n3,1,2,0.5\r\n3,2,0,0.25\r\n1,1,1,1.5\r\n'
    with pytest.raises(OutputError) as err:  # the default is not to replace
        write_recommendations(out, users[:1], items[:1], scores[:1])
    assert str(err.value) == (f'--output {str(out)!r} already exists. Fix: pass --force to '
                              f'replace it, or choose another file')
    assert out.read_text().count('\n') == 4
    write_recommendations(out, users[:1], items[:1], scores[:1], force=True)
    assert out.read_bytes() == b'user,rank,item,score\r\n3,1,2,0.5\r\n3,2,0,0.25\r\n'


def test_write_recommendations_parquet_rows_in_full(tmp_path):
    pq = pytest.importorskip('pyarrow.parquet')
    import torch

    from mmssl_pyg.training.recommend import write_recommendations
    users = torch.tensor([3, 1])
    items = torch.tensor([[2, 0], [1, 5]])
    scores = torch.tensor([[0.5, 0.25], [1.5, float('-inf')]])  # user 1: one unseen item
    out = tmp_path / 'recs.PARQUET'  # the suffix is read case-insensitively
    assert write_recommendations(out, users, items, scores) == out
    table = pq.read_table(out)  # a Parquet file, not CSV text under that name
    # the same rows as the CSV test above, the -inf tail left out; scores as float32
    assert table.to_pydict() == {'user': [3, 3, 1], 'rank': [1, 2, 1], 'item': [2, 0, 1],
                                 'score': [0.5, 0.25, 1.5]}
    assert str(table.schema.field('score').type) == 'float'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['recs.PARQUET']  # no temporary file


def test_check_output_path_returns_the_lower_case_suffix_and_keeps_existing_files(tmp_path):
    from mmssl_pyg.training.recommend import check_output_path
    from mmssl_pyg.utils.io import OutputError
    assert check_output_path(tmp_path / 'recs.CSV') == '.csv'
    existing = tmp_path / 'old.csv'
    existing.write_text('user,rank,item,score\n')
    with pytest.raises(OutputError, match='already exists'):  # the default is not to replace
        check_output_path(existing)
    assert check_output_path(existing, force=True) == '.csv'
