"""benchmarks/hand_mutants.py: the issue-27 bugs stay applicable to the current code."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import hand_mutants as H

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('mutant', H.MUTANTS, ids=lambda m: m.name)
def test_each_bug_applies_once_and_names_existing_tests(mutant):
    # a refactor that moves the text makes the list stale: this test says which entry
    assert (ROOT / mutant.path).read_text().count(mutant.old) == 1
    assert mutant.old != mutant.new
    for test in mutant.tests:
        file, _, name = test.partition('::')
        source = (ROOT / file).read_text()
        assert not name or re.search(rf'^def {re.escape(name)}\(', source, re.M), test


def test_apply_changes_the_copy_and_refuses_a_stale_entry(tmp_path):
    m = H.HandMutant('x', 'a.py', 'y = 1\n', 'y = 2\n', ('t.py',))
    (tmp_path / 'a.py').write_text('x = 0\ny = 1\n')
    H.apply(m, tmp_path)
    assert (tmp_path / 'a.py').read_text() == 'x = 0\ny = 2\n'
    with pytest.raises(ValueError, match="'x' occurs 0 times, not once; update MUTANTS"):
        H.apply(m, tmp_path)


def test_the_issue_lists_four_corrupting_bugs_and_eleven_behaviours():
    assert len(H.MUTANTS) == 15 == len({m.name for m in H.MUTANTS})
