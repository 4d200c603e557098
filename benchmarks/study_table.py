"""The equal-budget study's published tables (benchmarks/PROTOCOL.md Sec. 7), from its
databases and its final units.

Writes ``benchmarks/results/study-final/study.md`` and, beside it, one CSV per table
(``study_<dataset>.csv``, ``study_cost.csv``)::

    python -m benchmarks.study table [--out benchmarks/results/study]
                                     [--final-out benchmarks/results/study-final]

Per dataset, one row per model (popularity and the 10 studied models): the trials its study
finished (complete / pruned), the selected configuration (the study's tuned preset, from its
best complete trial), validation and test Recall@20 and NDCG@20 (mean ± std over the final
units' seeds) and MMSSL against the row (Sec. 6): the seed-paired t-interval of test Recall@20,
the user-level bootstrap interval and Wilcoxon p-value Holm-corrected across the 10 comparisons,
and the verdict, a win only when both agree (:func:`benchmarks.accuracy.user_level_comparisons`).

**The gate** (Sec. 6-7, pre-registered): a dataset's comparison is rendered only when every one
of its 10 studies has :data:`~benchmarks.study.TRIALS` finished trials and every study's winner,
and popularity, have final units on every seed of :data:`~benchmarks.study.FINAL_SEEDS`. Until
then its section gives only those counts and no validation or test figure. The cost table is
always rendered (it reads no metric): the seconds of each study (its summed trial seconds, the
figure ``status.md`` gives), of its final units and of its cross-dataset runs (Sec. 8), with
the totals.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks import _common as C
from benchmarks._plan import PAPER_ORDER, _config_id, _metric
from benchmarks.accuracy import _per_seed, accuracy_rows, user_level_comparisons
from benchmarks.study import (
    DATASETS,
    FINAL_OUT,
    FINAL_SEEDS,
    MODELS,
    OUT,
    TRIALS,
    cross_file,
    study_dir,
    winner_file,
    winner_params,
)
from benchmarks.study_report import StudySummary, _fmt_param, summarise
from mmssl_pyg.training.presets import read_yaml

#: The model every row is compared with, and the row beside the studied models without a study.
OURS = 'mmssl'
POP = 'pop'
#: Row order of every table: the popularity floor, then the paper's order.
ROWS = tuple(sorted((POP, *MODELS), key=PAPER_ORDER.index))
#: The benchmark the final units belong to (``python -m benchmarks.study final`` runs it).
BENCHMARK = 'accuracy'
#: Bootstrap resamples of the user-level interval (PROTOCOL.md Sec. 6).
RESAMPLES = 10_000

_RERUN = ('Fix: restore the committed copy of this unit (git restore <file>); a unit that was '
          'never committed whole is deleted and run again by `python -m benchmarks.study final '
          '--models M --datasets D` (it skips the units that are present)')
#: Fields every final unit needs, and those of a finished (``status: ok``) one, with their types.
_FIELDS = {'spec.model': str, 'spec.dataset': str, 'spec.seed': int, 'spec.label': str,
           'status': str}
_OK_FIELDS = {'key': dict, 'stamp': dict, 'fit_seconds': float, 'val.recall@20': float,
              'val.ndcg@20': float, 'test.recall@20': float, 'test.ndcg@20': float}

_KINDS = {str: 'a string', int: 'an integer', float: 'a number', dict: 'a JSON object'}


class MalformedResult(ValueError):
    """A study database, tuned preset, cross-dataset run or final unit that the tables cannot
    use; the message names the file, the field and the fix."""


@dataclass
class StudyRow:
    """One model on one dataset: its study (``None`` for popularity or a study not started)
    and its final units (``status: ok``, any seed)."""
    dataset: str
    model: str
    summary: StudySummary | None
    units: list[dict]

    @property
    def finished(self) -> int:
        return self.summary.finished if self.summary is not None else 0

    @property
    def seeds(self) -> set[int]:
        return {u['spec']['seed'] for u in self.units}

    @property
    def done(self) -> bool:
        """The study has its trials and its winner has its final units (popularity: its
        units)."""
        return (self.model == POP or self.finished >= TRIALS) and \
            set(FINAL_SEEDS) <= self.seeds


# ---------------------------------------------------------------------------------------------
# reading


def _field(record: dict, dotted: str, kind: type, path: Path):
    value = record
    for part in dotted.split('.'):
        if not isinstance(value, dict) or part not in value:
            raise MalformedResult(f'{path}: field {dotted!r} is missing. {_RERUN}')
        value = value[part]
    numeric = kind is float and isinstance(value, (int, float))
    if isinstance(value, bool) or not (numeric or isinstance(value, kind)):
        raise MalformedResult(f'{path}: field {dotted!r} is {value!r}, not {_KINDS[kind]}. '
                              f'{_RERUN}')
    return value


def load_final_units(final_out: Path) -> list[dict]:
    """The finished (``status: ok``) final units of the studied models and popularity on the
    study's datasets, each with its file under ``'_file'``; a unit file that is not JSON or
    lacks a field the tables read raises :class:`MalformedResult` naming it."""
    folder = C.units_dir(final_out, BENCHMARK)
    units = []
    for path in sorted(folder.glob('*.json')) if folder.is_dir() else []:
        try:
            unit = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedResult(f'{path}: not a JSON unit record ({err}). {_RERUN}') from err
        if not isinstance(unit, dict):
            raise MalformedResult(f'{path}: not a unit record (a JSON object). {_RERUN}')
        for dotted, kind in _FIELDS.items():
            _field(unit, dotted, kind, path)
        spec = unit['spec']
        if unit['status'] != 'ok' or spec['dataset'] not in DATASETS or \
                spec['model'] not in ROWS:
            continue
        for dotted, kind in _OK_FIELDS.items():
            _field(unit, dotted, kind, path)
        unit['_file'] = str(path)
        units.append(unit)
    return units


def collect(out: Path = OUT, final_out: Path = FINAL_OUT) -> dict[str, list[StudyRow]]:
    """``{dataset: [StudyRow in ROWS order]}`` from the study databases under ``out`` and the
    final units under ``final_out``."""
    by_study = defaultdict(list)
    for unit in load_final_units(final_out):
        by_study[(unit['spec']['dataset'], unit['spec']['model'])].append(unit)
    table = {}
    for dataset in DATASETS:
        rows = []
        for model in ROWS:
            db = study_dir(model, dataset, out) / 'study.db'
            summary = None
            if model != POP and db.is_file():
                try:
                    summary = summarise(db, dataset, model)
                except ValueError as err:
                    raise MalformedResult(str(err)) from err
            rows.append(StudyRow(dataset, model, summary, by_study[(dataset, model)]))
        table[dataset] = rows
    return table


def unit_seconds(unit: dict) -> float:
    """The seconds of one final unit: loading its data, fitting, and its per-user test metrics.
    A unit resumed after its process died adds the training and validation seconds of the
    epochs it kept (from its history), as a resumed study trial does (PROTOCOL.md amendment of
    2026-12-07); the epochs lost after the last checkpoint are not counted."""
    seconds = float(unit['fit_seconds']) + float(unit.get('load_seconds') or 0.0) + \
        float(unit.get('per_user_seconds') or 0.0)
    resumed = unit.get('resumed_from_epoch')
    if resumed:
        seconds += sum(float(h.get('epoch_seconds') or 0.0) + float(h.get('eval_seconds') or 0.0)
                       for h in unit.get('history') or [] if h.get('epoch', 0) <= resumed)
    return seconds


def cross_seconds(model: str, dataset: str, out: Path = OUT) -> float | None:
    """Seconds of the cross-dataset run of ``model``'s other winner on ``dataset`` (Sec. 8),
    or ``None`` when it has not run."""
    seconds = []
    for source in [d for d in DATASETS if d != dataset]:
        path = cross_file(model, source, dataset, out)
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text())['seconds']
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MalformedResult(f'{path}: no \'seconds\' field in a JSON cross-dataset run '
                                  f'({err!r}). Fix: delete it and run `python -m benchmarks.study'
                                  f' cross --models {model}` again') from err
        seconds.append(float(value))
    return sum(seconds) if seconds else None


# ---------------------------------------------------------------------------------------------
# the comparison of a dataset whose studies are all done


def selected_configuration(row: StudyRow, out: Path = OUT) -> str:
    """``'trial #N: option=value, ...'``: the winner's values from the study's tuned preset,
    after checking that the preset names the database's best complete trial and that every
    final unit of the row ran exactly those values (``spec.model_options`` /
    ``spec.train_options``)."""
    path = winner_file(row.model, row.dataset, out)
    fix = ('Fix: restore the committed copies of the study folder; the study rewrites the preset '
           'at each new best complete trial')
    try:
        params, _ = winner_params(row.model, row.dataset, out)
        named = read_yaml(path)['provenance'].get('best_trial')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MalformedResult(f'{path}: not the tuned preset of a finished study ({err!r}). '
                              f'{fix}') from err
    best = row.summary.best_number if row.summary is not None else None
    if named != best:
        raise MalformedResult(f'{path}: its provenance.best_trial is {named!r}, but the best '
                              f'complete trial in the study database is {best!r}. {fix}')
    for unit in row.units:
        spec = unit['spec']
        for key, value in params:
            section, _, option = key.partition('.')
            if (spec.get(f'{section}_options') or {}).get(option, ...) != value:
                raise MalformedResult(
                    f'{unit["_file"]}: this final unit did not run the study\'s winner '
                    f'({path}): its spec.{section}_options[{option!r}] is '
                    f'{(spec.get(f"{section}_options") or {}).get(option)!r}, the winner\'s '
                    f'{value!r}. {_RERUN}')
    values = ', '.join(f'{k}={_fmt_param(v)}' for k, v in params) or 'the preset\'s values'
    return f'trial #{best}: {values}'


def _one_configuration(row: StudyRow) -> None:
    configs = {_config_id(u) for u in row.units}
    if len(configs) > 1:
        files = ', '.join(sorted(Path(u['_file']).name for u in row.units))
        raise MalformedResult(f'{row.model} on {row.dataset}: its final units hold '
                              f'{len(configs)} configurations ({files}); a row is one '
                              f'configuration on paired seeds. Fix: remove the units that are '
                              f'not its final units')


def comparison_table(rows: list[StudyRow], out: Path = OUT, resamples: int = RESAMPLES):
    """``(columns, csv_rows, md_rows, skipped)`` of a dataset whose studies are all done: one
    row per model with its trials, configuration, metrics and its comparison with MMSSL."""
    by_model = {r.model: r for r in rows}
    for r in rows:
        _one_configuration(r)
    configuration = {r.model: 'preset (no study)' if r.model == POP else
                     selected_configuration(r, out) for r in rows}
    rows_units = accuracy_rows([u for r in rows for u in r.units])
    assert [name for name, _ in rows_units] == list(ROWS)  # one configuration each
    comparisons, skipped = user_level_comparisons(rows_units, OURS, 'recall@20', resamples)
    against = {c.other: c for c in comparisons}
    csv_rows, md_rows = [], []
    for name, us in rows_units:
        s = by_model[name].summary
        trials = 'no study' if s is None else \
            f'{s.counts.get("COMPLETE", 0)} / {s.counts.get("PRUNED", 0)}'
        cells = [name, trials, configuration[name], len(_per_seed(us))]
        cells += [_metric(us, split, m) for split in ('val', 'test')
                  for m in ('recall@20', 'ndcg@20')]
        c = against.get(name)
        if c is None:
            cells += ['reference' if name == OURS else 'n/a (no per-user lists)'] + [''] * 5
            md_rows.append(cells)
        else:
            t = c.users  # the user-level interval, shown like the seed one (n: users)
            cells += [c.seed_diff, t.users,
                      C.PairedDiff(t.mean_difference, t.low, t.high, t.users, math.nan),
                      t.p_value, c.p_holm, c.verdict]
            md_rows.append(cells[:11] + [f'{t.p_value:.3g}', f'{c.p_holm:.3g}', c.verdict])
        csv_rows.append(cells)
    columns = ['model', 'trials complete / pruned', 'selected configuration', 'seeds',
               'val Recall@20', 'val NDCG@20', 'test Recall@20', 'test NDCG@20',
               f'seed-paired Δ test Recall@20 ({OURS} − row) [95% t]', 'test users',
               f'user-level Δ test Recall@20 ({OURS} − row) [95% bootstrap]', 'Wilcoxon p',
               'Holm p', 'verdict']
    return columns, csv_rows, md_rows, skipped


# ---------------------------------------------------------------------------------------------
# the tables


def gate_line(dataset: str, rows: list[StudyRow]) -> str:
    """Where a dataset stands against the gate, in one line (no metric)."""
    studies = [r for r in rows if r.model != POP]
    done = sum(r.finished >= TRIALS for r in studies)
    with_units = sum(set(FINAL_SEEDS) <= r.seeds for r in studies)
    pop = next(r for r in rows if r.model == POP)
    text = (f'{dataset}: {done} of {len(studies)} studies have their {TRIALS} finished trials; '
            f'final units on seeds {", ".join(map(str, FINAL_SEEDS))}: {with_units} of '
            f'{len(studies)} winners, popularity {"yes" if pop.done else "no"}')
    if all(r.done for r in rows):
        return text + ': every study is done, the comparison is shown'
    return text + ': no comparison is shown before all are done (PROTOCOL.md Sec. 6-7)'


def progress_table(rows: list[StudyRow]) -> tuple[list[str], list[list]]:
    """The counts of a dataset that is not done: finished trials and final-unit seeds."""
    columns = ['model', f'finished trials (of {TRIALS})', 'complete / pruned',
               f'final units (of {len(FINAL_SEEDS)} seeds)']
    table = []
    for r in rows:
        s = r.summary
        table.append([r.model, 'no study' if r.model == POP else r.finished,
                      'no study' if r.model == POP else 'not started' if s is None else
                      f'{s.counts.get("COMPLETE", 0)} / {s.counts.get("PRUNED", 0)}',
                      len(set(FINAL_SEEDS) & r.seeds)])
    return columns, table


def cost_table(table: dict[str, list[StudyRow]], out: Path = OUT) -> tuple[list[str], list]:
    """One row per dataset and model, then each dataset's total and the study's: the seconds of
    the study (summed trial seconds of its database, complete, pruned and failed trials, as
    ``status.md``), of its final units (:func:`unit_seconds`, summed and per unit), of the
    cross-dataset run that ran on this dataset, and their sum."""
    columns = ['dataset', 'model', 'finished trials', 'study seconds', 'final units',
               'final unit seconds', 'seconds per final unit', 'cross-dataset run seconds',
               'total seconds']
    rows, totals = [], {}
    for dataset, study_rows in table.items():
        sums = [0.0, 0, 0.0, 0.0]
        for r in study_rows:
            study = r.summary.seconds if r.summary is not None else None
            units = sum(unit_seconds(u) for u in r.units)
            cross = None if r.model == POP else cross_seconds(r.model, dataset, out)
            per_unit = units / len(r.units) if r.units else None
            total = (study or 0.0) + units + (cross or 0.0)
            rows.append([dataset, r.model, 'no study' if r.model == POP else r.finished,
                         _seconds(study), len(r.units), _seconds(units), _seconds(per_unit),
                         _seconds(cross), _seconds(total)])
            for i, x in enumerate((study, len(r.units), units, cross)):
                sums[i] += x or 0
        totals[dataset] = sums
        rows.append(_total_row(dataset, 'all models', sums))
    everything = [sum(t[i] for t in totals.values()) for i in range(4)]
    rows.append(_total_row('all datasets', 'all models', everything))
    return columns, rows


def _total_row(dataset: str, model: str, sums: list) -> list:
    study, n, units, cross = sums
    return [dataset, model, '', _seconds(study), n, _seconds(units),
            _seconds(units / n if n else None), _seconds(cross),
            _seconds(study + units + cross)]


def _seconds(x: float | None):
    return None if x is None else C.Num(float(x), 0)


class _TableReport(C.Report):
    """The report of :func:`write_tables`: its head names the units it read (no plan)."""

    def cut_lines(self) -> list[str]:
        return [f'final units read: {len(self.units)} (`{BENCHMARK}/units/` of this folder)']


def write_tables(out: Path = OUT, final_out: Path = FINAL_OUT,
                 resamples: int = RESAMPLES) -> tuple[Path, list[str]]:
    """Write ``<final_out>/study.md`` and its CSVs; return its path and one :func:`gate_line`
    per dataset."""
    if not Path(out).is_dir():
        raise MalformedResult(f'{out}: no such folder. Fix: give --out the study results folder '
                              f'(benchmarks/results/study, where the study writes its databases)')
    table = collect(out, final_out)
    units = [u for rows in table.values() for r in rows for u in r.units]
    rep = _TableReport(final_out, 'study', 'The equal-budget study: published tables '
                       '(PROTOCOL.md Sec. 7)', C.stamp(), units, None)
    rep.add_text('Generated by `python -m benchmarks.study table` from the study databases '
                 '(`benchmarks/results/study/`) and the final units in this folder. Protocol: '
                 '[PROTOCOL.md](../../PROTOCOL.md). A dataset\'s comparison appears only when '
                 f'every one of its {len(MODELS)} studies has its {TRIALS} finished trials and '
                 'its winner, like popularity, has its final units on seeds '
                 f'{", ".join(map(str, FINAL_SEEDS))}; nothing is compared before (Sec. 6-7).\n')
    lines = []
    for dataset, rows in table.items():
        lines.append(gate_line(dataset, rows))
        slug = f'study_{dataset.replace("/", "_")}'
        if not all(r.done for r in rows):
            columns, progress = progress_table(rows)
            rep.add_table(slug, f'{dataset}: no comparison yet', columns, progress,
                          [lines[-1] + '. This section shows no validation or test figure '
                           'until then.'])
            continue
        columns, csv_rows, md_rows, skipped = comparison_table(rows, out, resamples)
        notes = [
            'Selected configuration: the study\'s tuned preset (its best complete trial on '
            'validation Recall@20, PROTOCOL.md Sec. 5). Metrics at the epoch selected on '
            'validation, the test split evaluated once per unit; mean ± sample std over '
            'seeds.',
            f'Against {OURS} (Sec. 6): the mean over seeds of the paired difference of test '
            'Recall@20 with its two-sided 95% Student-t interval; over test users (each '
            'user\'s Recall@20 averaged over the seeds both rows have), the mean paired '
            'difference with a percentile bootstrap interval (10,000 resamples of users, seed '
            '0) and the two-sided Wilcoxon signed-rank p-value, Holm-corrected across the '
            f'{len(ROWS) - 1} comparisons. Verdict: a win only when the seed interval and the '
            'Holm p (< 0.05) agree; otherwise a tie.']
        if skipped:
            notes.append(f'Left out of the user-level test (units without per-user lists): '
                         f'{", ".join(skipped)}.')
        rep.add_table(slug, f'{dataset}: every model\'s study winner, and {OURS} against it',
                      columns, csv_rows, notes, md=(columns, md_rows))
    columns, cost = cost_table(table, out)
    rep.add_table('study_cost', 'Cost of the study', columns, cost, [
        'Seconds are one-thread wall clock on a shared 2-core CPU (about CPU seconds when the '
        'cores were not oversubscribed). Study: the summed recorded seconds of its trials '
        '(complete, pruned and failed; a trial resumed after its process died counts its kept '
        'epochs), the figure of `benchmarks/results/study/status.md`. Final unit: loading, '
        'fitting (with the kept epochs of a resumed unit) and its per-user test metrics. '
        'Cross-dataset run: the other dataset\'s winner run on this one (Sec. 8).'])
    return rep.write(), lines
