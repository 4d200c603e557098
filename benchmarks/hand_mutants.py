"""The hand-made bugs of issue 27, each applied alone, against the fast tests (issue 27).

mutmut's operators (``make mutate``) change one token at a time; the bugs below are the
realistic, whole-behaviour ones the issue listed as missed or caught only by recorded numbers:
the four that would silently corrupt every result (a loader that compacts item ids without
moving the feature rows, a builder that writes feature rows in the item table's order, a
trainer that ignores ``exclude_val_at_test`` at test time, a Recall denominator of
``min(K, n)``) and the behaviours that had no direct test (early stopping's comparison, new
batches every epoch, 1-D parameters in the optimiser, the critic schedule over the run, the
positive sampler, LightGCN's normalisation, SGL's two views, FREEDOM's modality loss sign,
LATTICE's normalised frozen graph, the patience counter and the sampler state on resume).

Each bug is a text replacement in one library file (``old`` must occur exactly once, which
``tests/bench/test_hand_mutants.py`` checks on every commit). For each, the committed tree is
copied to a temporary folder (``git archive HEAD``), the bug applied, and the named tests run
with ``-m "not slow"``; a bug is caught when they fail. Writes
``benchmarks/results/mutation/hand_mutants.md``, stamped. Usage::

    python -m benchmarks.hand_mutants [--only NAME ...] [--out benchmarks/results/mutation]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'benchmarks' / 'results' / 'mutation'


@dataclass(frozen=True)
class HandMutant:
    """One bug: replace ``old`` by ``new`` in ``path``; ``tests`` should then fail."""
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


TR, EV = 'tests/training/test_trainer.py::', 'tests/training/test_evaluator.py::'
MUTANTS = (
    HandMutant(
        'loader compacts item ids without moving the feature rows', 'mmssl_pyg/data/folder.py',
        '    edges = {s: _sorted_edge_index(p) for s, p in splits.items()}\n',
        '    used = np.unique(np.concatenate([p.items for p in splits.values()]))\n'
        '    remap = np.full(num_items, -1, dtype=np.int64)\n'
        '    remap[used] = np.arange(used.size)\n'
        '    for p in splits.values():\n'
        '        p.items = remap[p.items]\n'
        '    num_items = int(used.size)\n'
        '    feats = {m: f[:num_items] for m, f in feats.items()}\n'
        '    edges = {s: _sorted_edge_index(p) for s, p in splits.items()}\n',
        ('tests/data/test_folder.py', 'tests/data/test_dataset.py')),
    HandMutant(
        "builder writes feature rows in the item table's row order", 'mmssl_pyg/data/builder.py',
        'item_rows = [row_of[i] for i in pairs.item_ids.tolist()]',
        'item_rows = sorted(row_of[i] for i in pairs.item_ids.tolist())',
        ('tests/data/test_builder.py',)),
    HandMutant(
        'trainer ignores exclude_val_at_test at test time', 'mmssl_pyg/training/trainer.py',
        'exclude_val_at_test=cfg.exclude_val_at_test,', 'exclude_val_at_test=False,',
        ('tests/training/test_trainer.py',)),
    HandMutant(
        'per-user Recall divides by min(K, n)', 'mmssl_pyg/training/evaluator.py',
        'recall.append(hits.sum(1).double() / n_ho.double())',
        'recall.append(hits.sum(1).double() / n_ho.clamp(max=k).double())',
        ('tests/training/test_evaluator.py',)),
    HandMutant(
        'early stopping takes a later equal value as an improvement',
        'mmssl_pyg/training/trainer.py',
        'improved = val[cfg.metric] > self.best_metric',
        'improved = val[cfg.metric] >= self.best_metric',
        (TR + 'test_early_stopping_keeps_the_first_maximum_and_stops_after_patience',)),
    HandMutant(
        'the same batches every epoch', 'mmssl_pyg/training/trainer.py',
        '        batches = [self.sampler.sample() for _ in range(n)]\n',
        '        self.sampler.generator.manual_seed(self.config.seed)\n'
        '        batches = [self.sampler.sample() for _ in range(n)]\n',
        (TR + 'test_every_epoch_draws_new_batches',)),
    HandMutant(
        '1-D parameters left out of the optimiser', 'mmssl_pyg/training/trainer.py',
        'params = [p for p in model.model_parameters() if p.requires_grad]',
        'params = [p for p in model.model_parameters() if p.requires_grad and p.dim() > 1]',
        (TR + 'test_optimiser_steps_every_trainable_parameter_including_1d_ones',)),
    HandMutant(
        'critic schedule counted per epoch instead of over the run',
        'mmssl_pyg/training/trainer.py',
        'critic_due = ((epoch - 1) * steps + step) % self.config.critic_every == 0',
        'critic_due = step % self.config.critic_every == 0',
        (TR + 'test_critic_steps_every_critic_every_batches_counted_over_the_run',)),
    HandMutant(
        "the positive is always the user's first training item",
        'mmssl_pyg/training/sampler.py',
        'offset = (torch.rand(n, generator=g, dtype=torch.float64) * deg).long()',
        'offset = (torch.rand(n, generator=g, dtype=torch.float64) * 0).long()',
        ('tests/training/test_sampler.py::'
         'test_positives_are_uniform_over_the_users_training_items',)),
    HandMutant(
        'LightGCN with the mean (row) normalisation', 'mmssl_pyg/models/lightgcn.py',
        'self.register_adjacency(graph)', "self.register_adjacency(graph, 'mean')",
        ('tests/models/test_lightgcn.py::'
         'test_lightgcn_propagation_matches_dense_symmetric_normalisation',)),
    HandMutant(
        'SGL contrasts a view with itself', 'mmssl_pyg/models/sgl.py',
        'info_nce(u1[users], u2[users], self.ssl_temp)',
        'info_nce(u1[users], u1[users], self.ssl_temp)',
        ('tests/models/test_sgl.py::test_sgl_ssl_loss_contrasts_the_two_views',)),
    HandMutant(
        "FREEDOM's modality loss with the sign flipped", 'mmssl_pyg/models/freedom.py',
        'modal = modal + bpr_loss((ub * pos).sum(-1), (ub * neg).sum(-1))',
        'modal = modal + bpr_loss((ub * neg).sum(-1), (ub * pos).sum(-1))',
        ('tests/models/test_freedom.py::'
         'test_freedom_modality_loss_is_bpr_of_positive_over_negative_features',)),
    HandMutant(
        "LATTICE's frozen kNN graph left unnormalised", 'mmssl_pyg/models/lattice.py',
        'frozen.append((ei, knn_normalize(ei, sim, graph.num_items)))',
        'frozen.append((ei, sim))',
        ('tests/models/test_lattice.py::'
         'test_lattice_frozen_knn_graph_is_symmetrically_normalised',)),
    HandMutant(
        'the patience counter is not restored on resume', 'mmssl_pyg/training/trainer.py',
        "self.bad_evals = int(state['bad_evals'])", 'self.bad_evals = 0',
        (TR + 'test_resume_restores_patience_counter_and_random_state',)),
    HandMutant(
        "the sampler's generator state is not restored on resume",
        'mmssl_pyg/training/trainer.py',
        "        self.sampler.load_state_dict(state['sampler'])\n", '',
        (TR + 'test_resume_restores_patience_counter_and_random_state',)),
)


def apply(mutant: HandMutant, root: Path) -> None:
    """Apply ``mutant`` to the checkout at ``root``; its ``old`` text must occur once."""
    path = root / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise ValueError(f'{mutant.path}: the text of {mutant.name!r} occurs '
                         f'{text.count(mutant.old)} times, not once; update MUTANTS in '
                         f'benchmarks/hand_mutants.py to the current code')
    path.write_text(text.replace(mutant.old, mutant.new))


def run_one(mutant: HandMutant, root: Path) -> dict:
    """Apply ``mutant`` in ``root`` (a copy of the tree), run its tests, restore the file."""
    original = (root / mutant.path).read_text()
    apply(mutant, root)
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS='1')
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-m', 'not slow', '-p',
                            'no:cacheprovider', '-rf', *mutant.tests], cwd=root, env=env,
                           capture_output=True, text=True)
    finally:
        (root / mutant.path).write_text(original)
    failed = [ln.split(' ', 2)[1] for ln in r.stdout.splitlines() if ln.startswith('FAILED ')]
    summary = [ln for ln in r.stdout.splitlines() if ' passed' in ln or ' failed' in ln]
    return {'name': mutant.name, 'path': mutant.path, 'caught': r.returncode == 1 and bool(failed),
            'failed': failed, 'returncode': r.returncode,
            'summary': summary[-1].strip('= ') if summary else r.stdout[-300:],
            'seconds': time.perf_counter() - t0}


def export_head(dest: Path) -> None:
    """The committed tree (``git archive HEAD``) into ``dest``."""
    with tempfile.TemporaryFile() as fh:
        subprocess.run(['git', 'archive', 'HEAD'], cwd=ROOT, stdout=fh, check=True)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(dest, filter='data')


def write_report(results: list[dict], out: Path, st: dict) -> Path:
    from benchmarks._common import stamp_lines
    lines = ['# Hand-made bugs against the fast tests (issue 27)', '']
    lines += [f'- {x}' for x in stamp_lines(st)]
    caught = sum(bool(r['caught']) for r in results)
    lines += ['', f'Each bug applied alone to a copy of the committed tree; the named tests run '
              f'with `-m "not slow"`. **{caught} of {len(results)} caught.** The bugs are '
              f'defined in `benchmarks/hand_mutants.py`.', '',
              '| bug | file | caught | failing tests | pytest | s |', '|---|---|---|---|---|---|']
    for r in results:
        failed = '<br>'.join(f'`{t}`' for t in r['failed']) or '–'
        lines.append(f'| {r["name"]} | `{r["path"]}` | {"yes" if r["caught"] else "**NO**"} | '
                     f'{failed} | {r["summary"]} | {r["seconds"]:.0f} |')
    path = out / 'hand_mutants.md'
    path.write_text('\n'.join(lines) + '\n')
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', nargs='*', default=None, help='run the bugs whose name contains '
                   'one of these strings')
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    from benchmarks._common import stamp
    st = stamp(command='python -m benchmarks.hand_mutants'
               + (f' --only {" ".join(args.only)}' if args.only else ''))
    chosen = [m for m in MUTANTS if not args.only or any(s in m.name for s in args.only)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export_head(root)
        for m in chosen:
            results.append(run_one(m, root))
            r = results[-1]
            print(f'{"caught" if r["caught"] else "MISSED"}: {m.name} ({r["summary"]})',
                  flush=True)
    print(f'wrote {write_report(results, args.out, st)}')
    return 0 if all(r['caught'] for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
