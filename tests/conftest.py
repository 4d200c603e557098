"""Pytest fixtures shared by the tests (helpers live in ``mmssl_pyg.testing``), and one test-session
hook for ``make mutate``: when mutmut runs the tests of a mutant (``MUTANT_UNDER_TEST``
names it), run them fastest first, by the durations mutmut recorded, so that ``-x`` stops a
killed mutant early. The normal suite is not affected."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.testing import FAST_adversarial as FAST
from mmssl_pyg.testing import assert_no_marker, make_tiny_graph, write_json_dataset


@pytest.fixture
def tiny_graph() -> RecGraph:
    """Two modalities, 20 users, 30 items."""
    return make_tiny_graph()


def pytest_collection_modifyitems(session, config, items):
    mutant = os.environ.get('MUTANT_UNDER_TEST', '')
    stats = Path('mutmut-stats.json')  # mutmut runs the tests from its mutants/ folder
    if '__mutmut_' not in mutant or not stats.is_file():
        return
    durations = json.loads(stats.read_text()).get('duration_by_test', {})
    items.sort(key=lambda item: durations.get(item.nodeid, float('inf')))


# A finished run and its copies, shared by the run-folder, checkpoint, run and io tests

@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'PWNED'
    yield path
    assert_no_marker(path)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A finished two-epoch run on a 120-user, 80-item dataset (never modified: tests that
    damage a run work on a copy)."""
    base = tmp_path_factory.mktemp('runs')
    data = write_json_dataset(base / 'tiny')
    run = base / 'run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST]) == 0
    return data, run


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    _, run = trained
    return Path(shutil.copytree(run, tmp_path / 'run'))


@pytest.fixture
def own(tmp_path):
    """A dataset and a one-epoch run of this test only (for tests that edit the data)."""
    data = write_json_dataset(tmp_path / 'own-data', num_users=60, num_items=60, per_user=8)
    run = tmp_path / 'own-run'
    from mmssl_pyg import cli
    assert cli.main(['train', '--dataset', str(data), '--run-dir', str(run), *FAST,
                     '--epochs', '1']) == 0
    return data, run
