"""Summarise a ``mutmut run`` (``make mutate``) into ``benchmarks/results/mutation/``.

Reads mutmut's per-file results (``mutants/**/*.meta``, written by ``mutmut run`` in the
repository root) and the reviewed equivalent mutants (``equivalent.yaml`` next to the
report), and writes ``report.md`` and ``summary.json``: per module and in total the mutants,
killed (a failing test or a timeout), survived, equivalent, environment-only (they differ
only on a GPU or with the optional torch-sparse, which this machine's tests cannot see), not
run, and the share killed of the others; every survivor not known to be equivalent, with its
diff; the equivalent and environment-only ones with their reasons; the functions mutmut does
not mutate; the commit the run was made on; and the wall-clock times recorded by hand in
``run_times.yaml`` next to the report (mutmut does not record them).

Equivalent mutants are matched by their function and their diff (the changed lines, not the
mutant's number, which shifts when the code changes), so the list survives edits elsewhere;
an entry that no longer matches a survivor of a module run here is reported as stale (unless
a mutant of its function was not run here: a module rerun in part cannot tell).

The scope is run module by module (hours in all on 2 cores), so a ``mutants/`` directory may
hold results for some modules only. A module without any mutant run there keeps the counts of
the previous ``summary.json``, shown with the commit and date of the run that produced them
(``carried``); a module in neither is listed as not run. A module's row shows the commit the
report was written on when its results come from this ``mutants/`` directory.

Usage (from the repository root, after ``mutmut run``)::

    python -m benchmarks.mutation_report [--out benchmarks/results/mutation]
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'benchmarks' / 'results' / 'mutation'
# a test process that crashed (mutmut's 'segfault', e.g. a sparse kernel handed a CSR row
# pointer array that is too short) failed as surely as a failing assertion
KILLED = {'killed', 'timeout', 'segfault', 'caught by type check'}


def _git(*args: str) -> str:
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def _changed_lines(diff: str) -> tuple[list[str], list[str]]:
    removed = [ln[1:].strip() for ln in diff.splitlines()
               if ln.startswith('-') and not ln.startswith('---')]
    added = [ln[1:].strip() for ln in diff.splitlines()
             if ln.startswith('+') and not ln.startswith('+++')]
    return removed, added


def _function_of(mutant: str) -> str:
    """``mmssl_pyg.nn.losses.x_gradient_penalty__mutmut_3`` -> ``mmssl_pyg.nn.losses.
    gradient_penalty``; methods (``xǁClassǁmethod``) -> ``...Class.method``."""
    module, _, name = mutant.rpartition('.')
    name = name.rsplit('__mutmut_', 1)[0]
    name = name[2:] if name.startswith('x_') else name[1:]
    return f'{module}.{name.strip("ǁ").replace("ǁ", ".")}'


def _unmutated_functions(paths: list[Path]) -> list[str]:
    """Functions mutmut 3 leaves alone: those with a decorator other than one
    ``@staticmethod`` / ``@classmethod``."""
    out = []
    for path in paths:
        module = '.'.join(path.with_suffix('').parts)
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef)):
                continue
            for child in node.body:
                if not isinstance(child, ast.FunctionDef) or not child.decorator_list:
                    continue
                decs = [ast.unparse(d) for d in child.decorator_list]
                if decs in (['staticmethod'], ['classmethod']):
                    continue
                owner = f'{node.name}.' if isinstance(node, ast.ClassDef) else ''
                out.append(f'{module}.{owner}{child.name} (@{", @".join(decs)})')
    return out


def module_of(function: str, modules: list[str]) -> str | None:
    """The module path (``mmssl_pyg/nn/losses.py``) of a dotted function name, or ``None``."""
    for module in modules:
        dotted = module[:-len('.py')].replace('/', '.')
        if function.startswith(dotted + '.'):
            return module
    return None


def carried_modules(unrun: list[str], previous: dict) -> dict[str, dict]:
    """The previous summary's per-module results of the modules that this ``mutants/``
    directory has not run, each stamped with the commit and date of the run it comes from
    (the module's own stamp when the previous summary carried it too, else the summary's)."""
    out = {}
    for module in unrun:
        entry = previous.get('modules', {}).get(module)
        if entry is None or entry.get('total', 0) == entry.get('not run', 0):
            continue
        out[module] = {**entry, 'commit': entry.get('commit', previous.get('commit')),
                       'date': entry.get('date', previous.get('date')), 'carried': True}
    return out


def stale_equivalents(known: list[dict], used: list[bool], not_run: set[str]) -> list[dict]:
    """The reviewed entries that matched no surviving mutant of this run (``used``), but those
    of a function with a mutant not run here: that mutant may be the one an entry describes
    (a module rerun in part, e.g. its survivors by name)."""
    return [entry for entry, hit in zip(known, used)
            if not hit and entry['function'] not in not_run]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=OUT)
    args = parser.parse_args()

    import os
    os.chdir(ROOT)  # mutmut reads setup.cfg and mutants/ relative to the working directory
    from mutmut.__main__ import SourceFileMutationData, walk_mutatable_files
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    equivalent_file = args.out / 'equivalent.yaml'
    known = yaml.safe_load(equivalent_file.read_text()) if equivalent_file.is_file() else []
    known = known or []
    used = [False] * len(known)

    def equivalent_entry(function, removed, added):
        for j, entry in enumerate(known):
            if entry['function'] == function and entry['removed'] == removed and \
                    entry['added'] == added:
                used[j] = True
                return entry
        return None

    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors, equivalents, paths, unrun = [], [], [], []
    not_run_functions: set[str] = set()
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        generated = (Path('mutants') / f'{path}.meta').is_file()
        if generated and not data.exit_code_by_key:
            continue  # nothing to mutate in it (an __init__.py of imports)
        if all(code is None for code in data.exit_code_by_key.values()):
            unrun.append(str(path))  # in scope, but no mutant of it generated or run here
            continue
        paths.append(Path(path))
        module = str(path)
        for name, code in sorted(data.exit_code_by_key.items()):
            status = status_by_exit_code[code]
            counts = per_module[module]
            counts['total'] += 1
            if status in KILLED:
                counts['killed'] += 1
                counts['timeout'] += status == 'timeout'
                continue
            if status == 'not checked':
                counts['not run'] += 1
                not_run_functions.add(_function_of(name))
                continue
            diff = get_diff_for_mutant(name, path=path)
            removed, added = _changed_lines(diff)
            function = _function_of(name)
            entry = equivalent_entry(function, removed, added)
            record = {'mutant': name, 'function': function, 'status': status,
                      'removed': removed, 'added': added, 'diff': diff}
            if entry is not None:
                kind = entry.get('kind', 'equivalent')
                if kind not in ('equivalent', 'environment-only'):
                    raise ValueError(f'{equivalent_file}: kind must be equivalent or '
                                     f'environment-only, got {kind!r}')
                counts[kind] += 1
                equivalents.append({**record, 'reason': entry['reason'], 'kind': kind})
            else:
                counts['survived'] += 1
                survivors.append(record)

    times_file = args.out / 'run_times.yaml'
    run_times = (yaml.safe_load(times_file.read_text()) if times_file.is_file() else []) or []
    summary_file = args.out / 'summary.json'
    previous = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    carried = carried_modules(unrun, previous)
    unrun = [m for m in unrun if m not in carried]
    # a carried module's entries were matched by its run; a module never run cannot tell
    for j, entry in enumerate(known):
        if module_of(entry['function'], list(carried) + unrun) is not None:
            used[j] = True
    numbers = ('total', 'killed', 'timeout', 'survived', 'equivalent', 'environment-only',
               'not run')
    total = Counter()
    for counts in per_module.values():
        total.update(counts)
    for entry in carried.values():
        total.update({k: entry[k] for k in numbers if k in entry})

    def score(c: Counter, env_survive: bool = False) -> float | None:
        checked = c['killed'] + c['survived'] + (c['environment-only'] if env_survive else 0)
        return None if checked == 0 else 100.0 * c['killed'] / checked

    dirty = bool(_git('status', '--porcelain', '--', 'mmssl_pyg', 'tests'))
    from importlib.metadata import version
    commit = _git('rev-parse', 'HEAD')
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    modules = {m: {**dict(c), 'killed_pct_of_non_equivalent': score(c), 'commit': commit,
                   'date': date} for m, c in per_module.items()}
    modules.update(carried)
    summary = {
        'commit': commit,
        'source_or_tests_modified_since_commit': dirty,
        'date': date,
        'mutmut': version('mutmut'),
        'total': dict(total),
        'killed_pct_of_non_equivalent': score(total),
        'killed_pct_counting_environment_only_as_survived': score(total, True),
        'modules': dict(sorted(modules.items())),
        'survivors': [{k: v for k, v in s.items() if k != 'diff'} for s in survivors],
        'stale_equivalents': stale_equivalents(known, used, not_run_functions),
        'modules_not_run': unrun,
        'run_times': run_times,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    summary_file.write_text(json.dumps(summary, indent=2) + '\n')

    def pct(c, env_survive=False):
        s = score(c, env_survive)
        return 'n/a' if s is None else f'{s:.1f}%'

    lines = [
        '# Mutation testing report',
        '',
        f'Written by `benchmarks/mutation_report.py` after `make mutate` (mutmut '
        f'{summary["mutmut"]}) on commit `{summary["commit"][:12]}`'
        f'{" (with uncommitted changes to mmssl_pyg/ or tests/)" if dirty else ""}, '
        f'{summary["date"]}. Scope and test selection: `[mutmut]` in `setup.cfg`. '
        'The scope is run module by module: a row marked *carried* comes from an earlier '
        'report, run on the commit and date in its row, not from this run.',
        '',
        'Killed: a selected test failed, timed out or crashed. Equivalent: reviewed, '
        'no test can tell the mutant from the original (reasons below). Environment-only: '
        'reviewed, it differs from the original only on a GPU (a `device=` argument '
        'dropped), with the optional torch-sparse installed, which the CPU test machine '
        'without torch-sparse cannot see, or only outside mutmut (a warning\'s stack level: '
        'mutmut\'s trampolines add frames; a test in the plain suite checks it). '
        'Survived: not killed and not known to be equivalent (a missing test). Not run: '
        'the run was stopped before the mutant. Score: killed / (killed + survived); '
        f'counting the environment-only mutants as survived it is {pct(total, True)}.',
        '',
        '| module | mutants | killed | (timeouts) | survived | equivalent | environment-only | '
        'not run | score | run on |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ]
    for module, entry in summary['modules'].items():
        c = Counter({k: entry[k] for k in numbers if k in entry})
        run_on = f'`{entry["commit"][:12]}` {entry["date"][:10]}' + \
            (' (carried)' if entry.get('carried') else '')
        lines.append(f'| `{module}` | {c["total"]} | {c["killed"]} | {c["timeout"]} | '
                     f'{c["survived"]} | {c["equivalent"]} | {c["environment-only"]} | '
                     f'{c["not run"]} | {pct(c)} | {run_on} |')
    lines.append(f'| **total** | {total["total"]} | {total["killed"]} | {total["timeout"]} | '
                 f'{total["survived"]} | {total["equivalent"]} | {total["environment-only"]} | '
                 f'{total["not run"]} | **{pct(total)}** | |')
    if unrun:
        lines += ['', f'In scope but without any mutant run yet ({len(unrun)} modules, not in '
                  'the counts above): ' + ', '.join(f'`{m}`' for m in unrun) + '.']
    if run_times:
        lines += ['', '## Run times', '', 'Wall clock of the runs behind the rows above, as '
                  'recorded in `run_times.yaml` (`/usr/bin/time -v` around `mutmut run`):', '']
        lines += [f'- {t["what"]}: {t["wall"]} on commit `{t["commit"]}`, {t["machine"]}.'
                  for t in run_times]
    lines += ['', f'## Survivors ({len(survivors)})', '']
    if not survivors:
        lines.append('None.')
    for s in survivors:
        lines += [f'### `{s["mutant"]}` ({s["status"]})', '', '```diff', s['diff'], '```', '']
    def change(e):
        return '; '.join(f'`{r}` -> `{a}`' for r, a in zip(e['removed'], e['added'])) or \
            f'removed `{"; ".join(e["removed"])}`'

    lines += ['', f'## Equivalent and environment-only mutants ({len(equivalents)})', '']
    for e in equivalents:
        lines.append(f'- `{e["mutant"]}` ({e["kind"]}): {change(e)}. {e["reason"]}')
    carried_known = [e for e in known if module_of(e['function'], list(carried)) is not None]
    if carried_known:
        lines += ['', f'Reviewed entries of the carried modules ({len(carried_known)}, matched '
                  'by their earlier run):', '']
        lines += [f'- `{e["function"]}` ({e.get("kind", "equivalent")}): {change(e)}. '
                  f'{e["reason"]}' for e in carried_known]
    stale = summary['stale_equivalents']
    if stale:
        lines += ['', f'## Stale entries of equivalent.yaml ({len(stale)})', '',
                  'They match no surviving mutant of this run (the code changed, or a test '
                  'now kills the mutant): review and remove them.', '']
        lines += [f'- `{e["function"]}`: `{e["removed"]}` -> `{e["added"]}`' for e in stale]
    lines += ['', '## Not mutated', '',
              'mutmut 3 does not mutate functions with a decorator other than a single '
              '`@staticmethod` / `@classmethod`; these are tested directly (the dense '
              'references in `tests/nn/` and '
              '`tests/models/test_mmssl.py`) but not mutation-tested:', '']
    lines += [f'- `{f}`' for f in _unmutated_functions(paths + [Path(m) for m in carried])]
    (args.out / 'report.md').write_text('\n'.join(lines) + '\n')
    print(f'{args.out / "report.md"}: {total["total"]} mutants, {total["killed"]} killed, '
          f'{total["survived"]} survived, {total["equivalent"]} equivalent, '
          f'{total["environment-only"]} environment-only, {total["not run"]} not run; score '
          f'{pct(total)} ({pct(total, True)} counting environment-only as survived)')


if __name__ == '__main__':
    main()
