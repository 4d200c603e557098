"""Where the equal-budget study of benchmarks/PROTOCOL.md stands, read from its databases.

Writes ``benchmarks/results/study/status.md``: per dataset and model, the finished trials
(complete / pruned; failed and running beside them), the best complete trial on validation
Recall@20 with its parameters and selected epoch, and the seconds the trials took (summed from
each trial's recorded fit seconds, wall clock of a one-thread process: about its CPU time
when the cores were not oversubscribed; a killed trial counts until its last heartbeat). Only
validation is read: the study never evaluates the test split::

    python -m benchmarks.study_report [--out benchmarks/results/study]

It reads the SQLite files directly (no Optuna needed), so it can run while the study does.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent / 'results' / 'study'
#: The model presets whose ``default:`` blocks Sec. 8 fills.
PRESETS = Path(__file__).resolve().parents[1] / 'mmssl_pyg' / 'configs'
#: Finished trials per study (PROTOCOL.md Sec. 3; the same figure as ``study.TRIALS``).
TARGET = 20


@dataclass
class StudySummary:
    """One study's state: trial counts by state, seconds, and its best complete trial."""
    dataset: str
    model: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    best_value: float | None = None
    best_number: int | None = None
    best_params: dict[str, object] = field(default_factory=dict)
    best_epoch: int | None = None

    @property
    def finished(self) -> int:
        return self.counts.get('COMPLETE', 0) + self.counts.get('PRUNED', 0)


def _param_value(value: float, distribution_json: str) -> object:
    dist = json.loads(distribution_json)
    if dist['name'] == 'CategoricalDistribution':
        return dist['attributes']['choices'][int(value)]
    if dist['name'] == 'IntDistribution':
        return int(value)
    return float(value)


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def summarise(db: Path, dataset: str, model: str) -> StudySummary:
    """Read one study database (opened read-only) into a :class:`StudySummary`; a file that is
    not an Optuna study database raises a ``ValueError`` naming it."""
    try:
        return _summarise(db, dataset, model)
    except (sqlite3.DatabaseError, json.JSONDecodeError) as err:
        raise ValueError(f'{db}: not a readable Optuna study database ({err}). Fix: restore the '
                         f'committed copy of this file (the study writes it through '
                         f'`python -m benchmarks.study step`)') from err


def _summarise(db: Path, dataset: str, model: str) -> StudySummary:
    s = StudySummary(dataset, model)
    con = sqlite3.connect(f'file:{db}?mode=ro', uri=True, timeout=60)
    try:
        trials = con.execute('SELECT trial_id, number, state, datetime_start, datetime_complete '
                             'FROM trials ORDER BY number').fetchall()
        attrs: dict[int, dict[str, object]] = {}
        for tid, key, value in con.execute(
                'SELECT trial_id, key, value_json FROM trial_user_attributes'):
            attrs.setdefault(tid, {})[key] = json.loads(value)
        values = dict(con.execute('SELECT trial_id, value FROM trial_values '
                                  'WHERE objective = 0').fetchall())
        # a trial whose process was killed is failed by the next one, long after it stopped:
        # its last heartbeat, not its completion time, says when it stopped
        beats = dict(con.execute('SELECT trial_id, heartbeat FROM trial_heartbeats').fetchall())
        best_tid = None
        for tid, number, state, start, end in trials:
            s.counts[state] = s.counts.get(state, 0) + 1
            if state in ('COMPLETE', 'PRUNED', 'FAIL'):
                recorded = attrs.get(tid, {}).get('seconds')
                if recorded is None:
                    recorded = _seconds(start, beats.get(tid) if state == 'FAIL' else end)
                # a trial resumed from a dead one's checkpoint (tune's trial_checkpoints) counts
                # the kept epochs in its seconds; the dead trial's own time is counted above
                resumed = attrs.get(tid, {}).get('resumed_from') or {}
                s.seconds += float(recorded) - float(resumed.get('seconds', 0.0))
            if state == 'COMPLETE' and values.get(tid) is not None and (
                    s.best_value is None or values[tid] > s.best_value):
                s.best_value, s.best_number, best_tid = float(values[tid]), number, tid
        if best_tid is not None:
            s.best_params = {name: _param_value(v, d) for name, v, d in con.execute(
                'SELECT param_name, param_value, distribution_json FROM trial_params '
                'WHERE trial_id = ? ORDER BY param_id', (best_tid,))}
            epoch = attrs.get(best_tid, {}).get('best_epoch')
            s.best_epoch = int(epoch) if epoch is not None else None
    finally:
        con.close()
    return s


def collect(out: Path = OUT) -> list[StudySummary]:
    return [summarise(db, db.parent.parent.name, db.parent.name)
            for db in sorted(out.glob('*/*/study.db'))]


def _fmt_param(v: object) -> str:
    return f'{v:.4g}' if isinstance(v, float) else str(v)


def render(summaries: list[StudySummary], target: int = TARGET, out: Path | None = None,
           presets: Path = PRESETS) -> str:
    lines = ['# Equal-budget study: where it stands', '',
             'Generated by `python -m benchmarks.study_report` from the study databases in this '
             'folder (validation only; the test split is not read by the study). '
             'Protocol: [PROTOCOL.md](../../PROTOCOL.md). A study is done at '
             f'{target} finished (complete or pruned) trials; nothing is selected before that. '
             '*Trial wall seconds* sum every trial\'s process time, failed ones included (to '
             'their last heartbeat); a trial resumed from a dead one\'s checkpoint adds only '
             'its own process.',
             '', '| dataset | model | finished | complete / pruned / failed / running | '
             'trial wall seconds | best val Recall@20 (trial) | its epoch | its parameters |',
             '|---|---|---|---|---|---|---|---|']
    total = 0.0
    for s in summaries:
        total += s.seconds
        c = s.counts
        best = 'n/a' if s.best_value is None else f'{s.best_value:.4f} (#{s.best_number})'
        params = ', '.join(f'{k}={_fmt_param(v)}' for k, v in s.best_params.items()) or 'n/a'
        lines.append(
            f'| {s.dataset} | {s.model} | {s.finished} / {target} | '
            f'{c.get("COMPLETE", 0)} / {c.get("PRUNED", 0)} / {c.get("FAIL", 0)} / '
            f'{c.get("RUNNING", 0)} | {s.seconds:.0f} | {best} | '
            f'{s.best_epoch if s.best_epoch is not None else "n/a"} | {params} |')
    if out is not None:
        lines += _defaults_section(sorted({s.model for s in summaries}), out, presets)
    done = sum(1 for s in summaries if s.finished >= target)
    lines += ['', f'Studies done: {done}; trial seconds so far: {total:.0f} '
              f'({total / 3600:.2f} h). Studies without a database have not started.', '']
    return '\n'.join(lines)


def _defaults_section(models: list[str], out: Path, presets: Path) -> list[str]:
    """PROTOCOL.md Sec. 8: for each model whose cross-dataset runs exist, each winner's score
    and the study the default comes from (:func:`benchmarks.study.default_choice`)."""
    from benchmarks.study import DATASETS, default_choice, winner_params
    rows = []
    for model in models:
        c = default_choice(model, out)
        if c is not None:
            params, _ = winner_params(model, c['default_from'], out)
            written = 'yes' if preset_default_is(model, params, presets) else 'no'
            rows.append(f'| {model} | ' + ' | '.join(f'{c["score"][d]:.4f}' for d in DATASETS)
                        + f' | {c["default_from"]} | {written} |')
    if not rows:
        return []
    return ['', '## Defaults for new data (PROTOCOL.md Sec. 8)', '',
            'Each winner also ran once on the other dataset (seed 2023, validation only; '
            '`python -m benchmarks.study cross`); its score is the mean over both datasets of '
            '(its validation Recall@20 / that study\'s best). The default comes from the '
            'higher score; *in the preset* says whether `mmssl_pyg/configs/<model>.yaml`\'s '
            '`default:` blocks hold exactly that winner\'s values.', '',
            '| model | ' + ' | '.join(f'winner of {d}' for d in DATASETS)
            + ' | default from | in the preset |', '|---' * (len(DATASETS) + 3) + '|'] + rows


def preset_default_is(model: str, params: list[tuple[str, object]], presets: Path) -> bool:
    """Whether ``<presets>/<model>.yaml``'s ``model: default:`` and ``train: default:`` blocks
    hold every ``(section.option, value)`` of ``params`` exactly."""
    path = presets / f'{model}.yaml'
    if not path.is_file():
        return False
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in params:
        section, _, option = key.partition('.')
        block = ((data.get(section) or {}).get('default') or {})
        if option not in block or block[option] != value:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', type=Path, default=OUT, help='the study results folder')
    args = ap.parse_args(argv)
    if not args.out.is_dir():
        ap.error(f'{args.out}: no such folder (the study writes its databases there)')
    text = render(collect(args.out), out=args.out)
    (args.out / 'status.md').write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
