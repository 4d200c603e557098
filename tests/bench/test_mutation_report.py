"""Tests of ``benchmarks/mutation_report.py``: a partial run (module by module) keeps the
earlier modules' results with the commit they were run on, and lists the rest as not run."""
from __future__ import annotations

from benchmarks.mutation_report import carried_modules, module_of, stale_equivalents


def test_module_of_maps_a_function_to_its_file():
    modules = ['mmssl_pyg/nn/losses.py', 'mmssl_pyg/models/mmssl.py', 'mmssl_pyg/models/mf.py']
    assert module_of('mmssl_pyg.nn.losses.cross_modal_info_nce', modules) == \
        'mmssl_pyg/nn/losses.py'
    assert module_of('mmssl_pyg.models.mmssl.MMSSL.encode', modules) == \
        'mmssl_pyg/models/mmssl.py'
    # a module whose name is a prefix of another's is not confused with it
    assert module_of('mmssl_pyg.models.mmssl_extra.f', modules) is None
    assert module_of('mmssl_pyg.training.trainer.Trainer.fit', modules) is None


def test_carried_modules_keep_the_earlier_counts_and_their_commit():
    previous = {
        'commit': 'a' * 40, 'date': '2026-11-29 23:02 UTC',
        'modules': {
            # an old summary without per-module stamps: the summary's commit and date
            'mmssl_pyg/nn/losses.py': {'total': 263, 'killed': 246, 'equivalent': 7,
                                       'environment-only': 10},
            # carried once already: keeps the stamp of the run that produced it
            'mmssl_pyg/nn/conv.py': {'total': 105, 'killed': 102, 'commit': 'b' * 40,
                                     'date': '2026-11-01 10:00 UTC', 'carried': True},
            # generated but never run: nothing to carry
            'mmssl_pyg/data/table.py': {'total': 80, 'not run': 80},
            # run here again: not carried
            'mmssl_pyg/training/evaluator.py': {'total': 10, 'killed': 9, 'survived': 1},
        },
    }
    unrun = ['mmssl_pyg/nn/losses.py', 'mmssl_pyg/nn/conv.py', 'mmssl_pyg/data/table.py',
             'mmssl_pyg/models/mf.py']
    got = carried_modules(unrun, previous)
    assert sorted(got) == ['mmssl_pyg/nn/conv.py', 'mmssl_pyg/nn/losses.py']
    assert got['mmssl_pyg/nn/losses.py'] == {
        'total': 263, 'killed': 246, 'equivalent': 7, 'environment-only': 10,
        'commit': 'a' * 40, 'date': '2026-11-29 23:02 UTC', 'carried': True}
    assert got['mmssl_pyg/nn/conv.py']['commit'] == 'b' * 40
    assert got['mmssl_pyg/nn/conv.py']['date'] == '2026-11-01 10:00 UTC'
    assert carried_modules(unrun, {}) == {}


def test_an_entry_is_stale_only_when_every_mutant_of_its_function_ran():
    matched = {'function': 'mmssl_pyg.nn.losses.f', 'removed': ['a'], 'added': ['b']}
    gone = {'function': 'mmssl_pyg.nn.losses.f', 'removed': ['c'], 'added': ['d']}
    unjudged = {'function': 'mmssl_pyg.training.presets.read_yaml', 'removed': ['e'],
                'added': ['f']}
    known = [matched, gone, unjudged]
    # f ran in full: its unmatched entry is stale; read_yaml has a mutant not run here
    assert stale_equivalents(known, [True, False, False],
                             {'mmssl_pyg.training.presets.read_yaml'}) == [gone]
    assert stale_equivalents(known, [True, False, False], set()) == [gone, unjudged]
    assert stale_equivalents(known, [True, False, False],
                             {'mmssl_pyg.nn.losses.f',
                              'mmssl_pyg.training.presets.read_yaml'}) == []
