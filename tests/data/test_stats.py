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


def _stats(name, users, items, train, val, test, sparsity, modalities):
    return {'name': name, 'users': users, 'items': items, 'train': train, 'val': val,
            'test': test, 'interactions': train + val + test, 'sparsity': sparsity,
            'modalities': modalities}


def test_table_text_in_full():
    """Labels left-aligned to the longest label, each column right-aligned to its widest cell
    (the name included), two spaces apart; a modality a dataset lacks shows '-'."""
    a = _stats('a', 1234, 10, 5, 1, 2, 0.5, {'image': 4})
    b = _stats('long-name', 3, 2000, 1000000, 0, 7, 0.25, {'text': 384})
    # "Sparsity (train)" (16 characters) is the longest label; column a's widest cell is
    # '50.000%' (7), column long-name's '1,000,000' (9)
    expected = '\n'.join([
        '                        a  long-name',
        'Users               1,234          3',
        'Items                  10      2,000',
        'Train                   5  1,000,000',
        'Val                     1          0',
        'Test                    2          7',
        'Interactions            8  1,000,007',
        'Sparsity (train)  50.000%    25.000%',
        'image dim               4          -',
        'text dim                -        384',
    ])
    assert format_stats(a, b) == expected
    assert format_stats([a, b]) == format_stats(a, b)  # one list works too


def test_a_name_wider_than_its_cells_sets_the_column_width_and_no_modality_says_none():
    s = _stats('a-very-long-dataset-name', 1, 1, 1, 0, 0, 0.0, {})
    lines = format_stats(s).splitlines()
    assert lines[0] == ' ' * len('Sparsity (train)') + '  a-very-long-dataset-name'
    assert lines[1] == 'Users' + ' ' * 11 + '  ' + '1'.rjust(24)
    assert lines[-1] == 'Modalities' + ' ' * 6 + '  ' + 'none'.rjust(24)
    assert len(lines) == 9


def test_stats_of_a_graph_a_plain_dataset_and_a_dict():
    import torch
    from torch_geometric.data import InMemoryDataset

    from mmssl_pyg.data import dataset_stats
    from mmssl_pyg.data.folder import build_hetero_data
    from mmssl_pyg.data.stats import _as_stats
    pairs = torch.tensor([[0, 0, 1], [0, 2, 1]])
    data = build_hetero_data(pairs, pairs[:, :1], pairs[:, :2], 2, 4,
                             {'image': torch.zeros(4, 3)}, name='hand')
    assert dataset_stats(data) == _stats('hand', 2, 4, 3, 1, 2, 1 - 3 / 8, {'image': 3})
    del data.name
    assert dataset_stats(data)['name'] == 'custom'  # a graph without a name

    class Plain(InMemoryDataset):  # a PyG dataset without MMSSLDataset's stats()
        def __init__(self, graph):
            super().__init__(None)
            self.data, self.slices = self.collate([graph])

    plain = Plain(build_hetero_data(pairs, pairs, pairs, 2, 4, name='first'))
    assert _as_stats(plain) == _stats('first', 2, 4, 3, 3, 3, 1 - 3 / 8, {})
    given = {'name': 'given'}
    assert _as_stats(given) is given


def test_print_stats_prints_the_table(capsys, mini_root):
    from mmssl_pyg.data import print_stats
    mini = TikTokMini(root=mini_root)
    print_stats(mini)
    assert capsys.readouterr().out == format_stats(mini) + '\n'
    assert mini.stats()['name'] == 'tiktok-mini'


def test_a_dataset_reports_its_processed_data_not_its_transformed_copy(mini_root):
    from mmssl_pyg.data.stats import _as_stats

    def rename(data):
        data.name = 'transformed'
        return data

    mini = TikTokMini(root=mini_root, transform=rename)
    assert mini[0].name == 'transformed'
    assert _as_stats(mini)['name'] == 'tiktok-mini' == mini.stats()['name']
    assert format_stats(mini).splitlines()[0].split() == ['tiktok-mini']


def test_an_empty_graph_has_sparsity_zero():
    import torch

    from mmssl_pyg.data import dataset_stats
    from mmssl_pyg.data.folder import build_hetero_data
    none = torch.zeros(2, 0, dtype=torch.long)
    for users, items in ((0, 5), (5, 0)):
        stats = dataset_stats(build_hetero_data(none, none, none, users, items))
        assert stats['sparsity'] == 0.0 and stats['interactions'] == 0


def test_a_graph_is_formatted_from_its_own_counts():
    import torch

    from mmssl_pyg.data import dataset_stats
    from mmssl_pyg.data.folder import build_hetero_data
    pairs = torch.tensor([[0, 1], [1, 0]])
    data = build_hetero_data(pairs, pairs, pairs, 2, 3, name='g')
    assert format_stats(data) == format_stats(dataset_stats(data))
    assert format_stats(data).splitlines()[1] == 'Users' + ' ' * 11 + '  ' + '2'.rjust(7)
