"""Pytest fixtures shared by the tests (helpers live in ``mmssl_pyg.testing``), and one test-session
hook for ``make mutate``: when mutmut runs the tests of a mutant (``MUTANT_UNDER_TEST``
names it), run them fastest first, by the durations mutmut recorded, so that ``-x`` stops a
killed mutant early. The normal suite is not affected."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.testing import make_tiny_graph


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
