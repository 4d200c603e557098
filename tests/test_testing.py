"""Shared helpers of the training tests (tiny synthetic graphs, a tiny MMSSL-format dataset),
and the sampler's tests."""
from __future__ import annotations

from mmssl_pyg.testing import read_json_dataset, write_json_dataset


def test_json_helpers_round_trip(tmp_path):
    graph = read_json_dataset(write_json_dataset(tmp_path / 'tiny', 10, 12, 5))
    assert graph.num_users == 10 and graph.val_edge_index.size(1) == 10
    assert graph.num_train == 30
