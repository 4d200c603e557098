"""The ``mmssl-pyg`` command line: parse arguments, then call the library.

Commands::

    mmssl-pyg train [--model M] [--dataset D] [--config FILE] [--tuned] [key=value ...]
    mmssl-pyg tune --model M --dataset D --trials N [--timeout SECONDS] [--storage URL]
    mmssl-pyg evaluate CHECKPOINT [--split val|test]
    mmssl-pyg compare CHECKPOINT_A CHECKPOINT_B [--split test] [--metric recall@20]
    mmssl-pyg recommend CHECKPOINT (--users 1,2,3 | --output FILE.csv|FILE.parquet) [-k 20]
    mmssl-pyg datasets [NAME ...]
    mmssl-pyg build-dataset (--recipe movielens-100k | --interactions FILE --output DIR ...)

Every user error (a bad option, file, dataset or output) ends in one line,
``mmssl-pyg <command>: error: <what, where, fix>``, and exit status 2.

Data-parallel training runs the same command under torchrun (see
:mod:`mmssl_pyg.training.distributed`)::

    torchrun --nproc_per_node=4 -m mmssl_pyg.cli train --device cuda ...
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings


def _checked(section: str, key: str, label: str = ''):
    """An argparse ``type`` that validates with the one option table
    (:func:`mmssl_pyg.training.options.check_option`)."""
    def parse(text: str):
        from .training.options import ConfigError, check_option
        try:
            value = check_option(section, key, text, source='', label=label)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return list(value) if isinstance(value, tuple) else value
    return parse


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(',') if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The ``mmssl-pyg`` parser: one subparser per command (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog='mmssl-pyg',
        description='Multi-modal self-supervised recommendation (MMSSL) on PyTorch Geometric.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    train = _add_train_parser(sub)
    _add_tune_parser(sub)
    ev = _add_evaluate_parser(sub)
    _add_compare_parser(sub)
    rec = _add_recommend_parser(sub)
    ds = _add_datasets_parser(sub)
    _add_build_dataset_parser(sub)
    parser.commands = sub.choices  # subcommand parsers, for their own error messages
    for command in (train, ev, rec, ds):
        command.add_argument('--force-reload', action='store_true',
                             help="rebuild the dataset's processed/ cache from the raw files "
                                  '(it is rebuilt anyway when a raw file changed)')
    return parser


def _add_train_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg train: the fields of :class:`~mmssl_pyg.training.run.RunRequest`."""
    train = sub.add_parser(
        'train', help='train a model (default: MMSSL on the bundled TikTok data)',
        description='Train a model with its preset (mmssl_pyg/configs/<model>.yaml), select the '
                    'epoch on validation Recall@20, test that epoch once, print the metrics and '
                    'write them to <run-dir>/metrics.json.',
        epilog='Options merge in this order, later wins: preset default <- preset <dataset> <- '
               '--config FILE <- key=value <- --epochs/--seed/--device/--precision. Example: '
               'mmssl-pyg train --model lightgcn --dataset tiktok-mini lr=1e-3 embedding_dim=32. '
               'Data parallel: torchrun --nproc_per_node=N -m mmssl_pyg.cli train --device cuda '
               '... (NCCL, one GPU per process) or --device cpu (gloo); multi-node: add '
               '--nnodes=M --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT --rdzv_id=RUN to '
               'torchrun on every node. Each process trains on every N-th mini-batch of the epoch '
               'and gradients are averaged; only rank 0 writes the run folder.')
    train.add_argument('overrides', nargs='*', metavar='key=value',
                       help='model or trainer option (YAML-typed); model.key=/train.key= force '
                            'the section')
    train.add_argument('--model', default=None, help='model name (default: mmssl)')
    train.add_argument('--dataset', default=None,
                       help='dataset name or folder in the MMSSL format (default: tiktok)')
    train.add_argument('--root', default=None, help="the dataset's folder (default: "
                                                    'datasets/<name> of the repository)')
    train.add_argument('--modalities', type=_str_list, default=None,
                       help='comma-separated modalities to load, e.g. image,audio (default: all)')
    train.add_argument('--config', dest='config_file', default=None, metavar='FILE',
                       help='YAML file with model: and/or train: sections')
    train.add_argument('--epochs', type=int, default=None, help='maximum number of epochs')
    train.add_argument('--seed', type=int, default=None, help='random seed')
    train.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default=None,
                       help='auto (default) picks cuda when available (under torchrun: '
                            'cuda:LOCAL_RANK with NCCL, or cpu with gloo)')
    train.add_argument('--precision', choices=['fp32', 'bf16', 'fp16'], default=None,
                       help='mixed precision of the training steps (default fp32): bf16 on GPUs '
                            'or CPUs, fp16 on GPUs only (with a GradScaler)')
    train.add_argument('--run-dir', default=None,
                       help='output folder (default: runs/<model>-<dataset>-<timestamp>)')
    train.add_argument('--resume', action='store_true',
                       help='continue the run in --run-dir from its last.pt')
    train.add_argument('--wandb', choices=['disabled', 'offline', 'online'], default=None,
                       help='Weights & Biases mode (default: offline, into <run-dir>/wandb; '
                            'upload later with `wandb sync`; --resume keeps the run\'s mode)')
    train.add_argument('--force', action='store_true',
                       help='replace the run in --run-dir (its best.pt, last.pt, metrics.json, '
                            'config.yaml) instead of refusing')
    train.add_argument('--no-progress', action='store_true', help='no progress bars')
    train.add_argument('--tuned', action='store_true',
                       help='apply the tuned preset written by `mmssl-pyg tune` '
                            '(mmssl_pyg/configs/tuned/<model>-<dataset>.yaml) on top of the '
                            'preset')
    return train


def _add_tune_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg tune: the fields of :class:`~mmssl_pyg.training.tune.TuneOptions`."""
    from .training.tune import (
        PRUNER_PERCENTILE,
        PRUNER_STARTUP_TRIALS,
        PRUNER_WARMUP_EPOCHS,
        TPE_STARTUP_TRIALS,
    )
    tune = sub.add_parser(
        'tune', help='search hyper-parameters with Optuna (validation only)',
        description='Run or continue an Optuna study (TPE sampler, percentile pruning on the '
                    'validation metric after each epoch, the median by default) over the '
                    'search space in the model\'s preset (search: section), scoring each '
                    'trial on validation only, and write the best trial as a tuned preset with '
                    'its provenance.',
        epilog='The study lives in a database, so a killed search resumes where it stopped and '
               'several processes or machines can share one study (--storage '
               'postgresql://... or the same SQLite file on a shared disk; give each process '
               'its own --seed). --trials and --timeout count the whole study. key=value '
               'options are fixed for every trial, e.g. epochs=100.')
    tune.add_argument('overrides', nargs='*', metavar='key=value',
                      help='options fixed for every trial (not searched)')
    tune.add_argument('--model', required=True, help='model name')
    tune.add_argument('--dataset', required=True, help='dataset name or folder')
    tune.add_argument('--trials', type=int, required=True,
                      help='finished (complete or pruned) trials the study should reach')
    tune.add_argument('--timeout', type=float, default=None, metavar='SECONDS',
                      help="the study's budget in summed trial seconds (default: none)")
    tune.add_argument('--storage', default=None, metavar='URL',
                      help='study database (default sqlite:///<run-dir>/study.db)')
    tune.add_argument('--study-name', default=None, help='default <model>-<dataset>')
    tune.add_argument('--run-dir', default=None,
                      help='study folder: database and wandb runs (default '
                           'runs/tune/<study-name>)')
    tune.add_argument('--seed', type=int, default=0, help='seed of the TPE sampler (default 0)')
    tune.add_argument('--root', default=None, help="the dataset's folder")
    tune.add_argument('--modalities', type=_str_list, default=None,
                      help='comma-separated modalities to load (default: all)')
    tune.add_argument('--config', dest='config_file', default=None, metavar='FILE',
                      help='YAML file with options fixed for every trial')
    tune.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default=None)
    tune.add_argument('--wandb', choices=['disabled', 'offline', 'online'], default='offline',
                      help='one wandb run per trial (default offline, into <run-dir>/wandb)')
    tune.add_argument('--no-prune', action='store_true', help='never prune a trial')
    tune.add_argument('--startup-trials', type=int, default=TPE_STARTUP_TRIALS, metavar='N',
                      help=f"TPE's random start-up trials (default {TPE_STARTUP_TRIALS})")
    tune.add_argument('--multivariate', action='store_true',
                      help='multivariate TPE: model the searched options jointly')
    tune.add_argument('--prune-percentile', type=float, default=PRUNER_PERCENTILE, metavar='P',
                      help='prune a trial below this percentile of the earlier trials at the '
                           f'same epoch (default {PRUNER_PERCENTILE:g}: the median rule)')
    tune.add_argument('--prune-warmup', type=int, default=PRUNER_WARMUP_EPOCHS, metavar='E',
                      help=f'no pruning before this epoch (default {PRUNER_WARMUP_EPOCHS})')
    tune.add_argument('--prune-startup', type=int, default=PRUNER_STARTUP_TRIALS, metavar='N',
                      help='no pruning before this many trials have finished (default '
                           f'{PRUNER_STARTUP_TRIALS})')
    tune.add_argument('--trial-checkpoints', action='store_true',
                      help='each trial saves a checkpoint every epoch, and a trial whose process '
                           'died resumes from it when the study continues (instead of starting '
                           'again)')
    tune.add_argument('--no-write', action='store_true',
                      help='do not write the tuned preset')
    tune.add_argument('--preset-dir', default=None,
                      help='where the tuned preset goes (default mmssl_pyg/configs/tuned)')
    tune.add_argument('--force', action='store_true',
                      help='replace an existing tuned preset (otherwise refused before the '
                           'study runs)')
    return tune


def _add_evaluate_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg evaluate CHECKPOINT."""
    ev = sub.add_parser('evaluate', help='evaluate a checkpoint on the validation or test split')
    ev.add_argument('checkpoint', help='best.pt / last.pt, or a run folder (its best.pt)')
    ev.add_argument('--split', choices=['val', 'test'], default='test')
    ev.add_argument('--ks', type=_checked('train', 'ks'), default=None,
                    help='cut-offs, positive and at most the number of items (default: '
                         '10,20,50)')
    ev.add_argument('--exclude-val-at-test', action='store_true',
                    help='also exclude validation items when ranking for test')
    ev.add_argument('--root', default=None, help="override the dataset's folder")
    ev.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    ev.add_argument('--json', action='store_true', help='print JSON instead of a table')
    return ev


def _add_compare_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg compare CHECKPOINT_A CHECKPOINT_B."""
    cmp = sub.add_parser('compare', help='paired user-level test of two runs on one dataset',
                         description='Rank both runs on the split and compare them user by '
                                     'user: the mean difference (A - B) of the metric with a '
                                     'bootstrap interval over users, and the two-sided '
                                     'Wilcoxon signed-rank p-value.')
    cmp.add_argument('a', metavar='CHECKPOINT_A', help='best.pt, or a run folder (its best.pt)')
    cmp.add_argument('b', metavar='CHECKPOINT_B', help='best.pt, or a run folder (its best.pt)')
    cmp.add_argument('--split', choices=['val', 'test'], default='test')
    cmp.add_argument('--metric', default='recall@20', help='recall@K or ndcg@K (default '
                                                           'recall@20)')
    cmp.add_argument('--exclude-val-at-test', action='store_true',
                     help='also exclude validation items when ranking for test')
    cmp.add_argument('--resamples', type=int, default=10_000, help='bootstrap resamples')
    cmp.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    cmp.add_argument('--json', action='store_true', help='print JSON instead of text')
    return cmp


def _add_recommend_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg recommend CHECKPOINT (--users | --output)."""
    rec = sub.add_parser('recommend',
                         help='top-k unseen items for users, to stdout or CSV/Parquet')
    rec.add_argument('checkpoint', help='best.pt / last.pt, or a run folder (its best.pt)')
    target = rec.add_mutually_exclusive_group(required=True)
    target.add_argument('--users', type=_checked('cli', 'users'),
                        help='comma-separated user ids (to stdout)')
    target.add_argument('--output', metavar='FILE',
                        help='write every user to FILE.csv or FILE.parquet (user,rank,item,score)')
    rec.add_argument('-k', '--k', type=int, default=20,
                     help='items per user, at most the number of items (default 20)')
    rec.add_argument('--force', action='store_true',
                     help='replace an existing --output file (never a folder or a link)')
    rec.add_argument('--exclude', choices=['train', 'all'], default='train',
                     help="items never recommended: the user's training items (default) or "
                          'all known interactions (train, val and test)')
    rec.add_argument('--root', default=None, help="override the dataset's folder")
    rec.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    return rec


def _add_datasets_parser(sub) -> argparse.ArgumentParser:
    """mmssl-pyg datasets [NAME ...]."""
    ds = sub.add_parser('datasets', help='list datasets and print their statistics')
    ds.add_argument('names', nargs='*', help='dataset names or folders (default: list all)')
    ds.add_argument('--root', default=None, help='folder holding one folder per dataset')
    return ds


def _add_build_dataset_parser(sub) -> None:
    # Every option defaults to None so that BuildRequest's fields hold the defaults.
    bd = sub.add_parser(
        'build-dataset', help='build a dataset folder from an interaction table and item texts',
        description='Turn an interaction table (CSV/TSV/Parquet: user, item, optional rating and '
                    'timestamp) and an item table (id, text columns, optional image paths) into '
                    'a dataset folder that --dataset DIR and load_dataset(DIR) read; or build '
                    'a public dataset with --recipe. See mmssl_pyg/data/builder.py.',
        epilog='Example: mmssl-pyg build-dataset --interactions ratings.csv --items movies.csv '
               '--output datasets/my-data --rating-col rating --min-rating 4 --kcore 5 '
               '--text-cols title,genres. Text features need pip install -e \'.[features]\'.')
    bd.add_argument('--recipe', default=None, metavar='NAME',
                    help='build a public dataset on this machine: movielens-100k')
    bd.add_argument('--source', default=None, metavar='DIR',
                    help="--recipe only: folder of the recipe's raw files (default: the "
                         'installed package copy)')
    bd.add_argument('--interactions', default=None, metavar='FILE', help='interaction table')
    bd.add_argument('--items', default=None, metavar='FILE', help='item table')
    bd.add_argument('-o', '--output', default=None, metavar='DIR',
                    help='dataset folder to write (a recipe defaults to datasets/<name>)')
    bd.add_argument('--sep', default=None, help='field separator of text tables (default: '
                                                'tab for .tsv, else comma)')
    for flag, text in (('--user-col', 'user id column (default user_id)'),
                       ('--item-col', 'item id column of the interactions (default item_id)'),
                       ('--rating-col', 'rating column'),
                       ('--time-col', 'timestamp column (numbers or ISO-8601)'),
                       ('--item-id-col', 'item id column of the item table (default: '
                                         '--item-col)'),
                       ('--text-template', "e.g. '{title} ({year}). {genres}' (default: the "
                                           "text columns joined with '. ')"),
                       ('--image-col', 'image path column of the item table'),
                       ('--image-root', 'folder of relative image paths (default: the item '
                                        "table's folder)"),
                       ('--image-model', 'torchvision backbone (default resnet50)'),
                       ('--image-weights', 'state-dict file of the backbone (never downloaded)'),
                       ('--text-model', 'sentence-transformers model folder (default: '
                                        'all-MiniLM-L6-v2 of the features extra)'),
                       ('--cache-dir', 'encoder cache (default <output>/cache)')):
        bd.add_argument(flag, default=None, help=text)
    bd.add_argument('--text-cols', type=_str_list, default=None,
                    help='comma-separated text columns of the item table')
    bd.add_argument('--min-rating', type=float, default=None,
                    help='keep rows with rating >= this as positives')
    bd.add_argument('--kcore', type=int, default=None,
                    help='minimum interactions per user and item, applied repeatedly')
    bd.add_argument('--split', choices=['random', 'temporal'], default=None,
                    help='per-user split: random (default, seeded) or temporal (latest held out)')
    bd.add_argument('--ratios', type=_str_list, default=None,
                    help='train,val,test fractions per user (default 0.8,0.1,0.1)')
    bd.add_argument('--seed', type=int, default=None, help='seed of the random split (0)')
    bd.add_argument('--batch-size', type=int, default=None, help='encoder batch size (64)')
    bd.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default=None,
                    help='encoder device (default cpu)')
    bd.add_argument('--force', action='store_true', help='replace a dataset already there')
    bd.add_argument('--no-progress', action='store_true', help='no progress bars')


def _train(args) -> int:
    from .training.recommend import format_metrics
    from .training.run import RunRequest, train_run
    result = train_run(_fields(RunRequest, args, progress=False if args.no_progress else None))
    if int(os.environ.get('RANK', '0') or 0) != 0:
        return 0  # torchrun: rank 0 prints
    fit = result.fit
    ks = result.train.ks
    if fit.resumed_from_epoch is not None:
        print(f'resumed {result.run_dir} after epoch {fit.resumed_from_epoch}')
    print(f'{result.model} on {result.dataset}: best epoch {fit.best_epoch} of '
          f'{len(fit.history)} (selected on validation {result.train.metric}'
          f'{", stopped early" if fit.stopped_early else ""})')
    print(format_metrics({'val': fit.val, 'test': fit.test}, ks))
    print(f'run folder: {result.run_dir} (metrics.json, best.pt, last.pt)')
    return 0


def _tune(args) -> int:
    from .training.tune import TuneOptions, tune
    tune(_fields(TuneOptions, args, prune=not args.no_prune, write_preset=not args.no_write))
    return 0


def _fields(cls, args, **extra):
    """``cls`` (a request dataclass) from the parsed arguments of the same names, plus
    ``extra`` (the flags whose name differs, e.g. ``--no-progress``)."""
    from dataclasses import fields
    given = vars(args)
    return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given}, **extra)


def _evaluate(args) -> int:
    from .training.options import DEFAULT_KS
    from .training.recommend import format_metrics
    from .training.run import evaluate_checkpoint
    ks = list(DEFAULT_KS) if args.ks is None else args.ks
    out = evaluate_checkpoint(args.checkpoint, args.split, ks,
                              exclude_val_at_test=args.exclude_val_at_test, device=args.device,
                              root=args.root, force_reload=args.force_reload)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f'{args.checkpoint} (epoch {out["epoch"]}), {args.split} split')
        print(format_metrics({args.split: out['metrics']}, ks))
    return 0


def _recommend(args) -> int:
    from .training.options import check_option
    from .training.recommend import (
        check_output_path,
        format_recommendations,
        recommend,
        write_recommendations,
    )
    from .training.run import load_run_checkpoint
    check_option('cli', 'k', args.k, source='', label='-k')  # before the (long) computation
    if args.output is not None:
        check_output_path(args.output, args.force)
    model, graph, _ = load_run_checkpoint(args.checkpoint, args.device, args.root,
                                          args.force_reload)
    users, items, scores = recommend(model, graph, args.users, args.k, exclude=args.exclude)
    if args.output is not None:
        path = write_recommendations(args.output, users, items, scores, force=args.force)
        print(f'wrote top-{args.k} items for {users.numel()} users to {path}', file=sys.stderr)
    else:
        sys.stdout.write(format_recommendations(users, items, scores))
    return 0


def _datasets(args) -> int:
    from .data import datasets_command
    from .data.validation import DatasetNotFoundError
    try:
        print(datasets_command(args.names or None, args.root, force_reload=args.force_reload))
    except DatasetNotFoundError as err:  # what to get and where: the answer this command gives
        print(str(err))
        print(f'mmssl-pyg datasets: error: {err.summary}', file=sys.stderr)
        return 2
    return 0


def _build_dataset(args) -> int:
    from .data.recipes import build_command
    print(build_command(vars(args)))
    return 0


def _compare(args) -> int:
    import re
    from dataclasses import asdict

    from .training.options import ConfigError
    from .training.significance import compare_checkpoints
    m = re.fullmatch(r'(recall|ndcg)@(\d+)', args.metric)
    if m is None:
        raise ConfigError(f'--metric must be recall@K or ndcg@K, got {args.metric!r}')
    try:
        out = compare_checkpoints(args.a, args.b, args.split, int(m.group(2)), m.group(1),
                                  exclude_val_at_test=args.exclude_val_at_test,
                                  device=args.device, resamples=args.resamples)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    t = out['test']
    if args.json:
        print(json.dumps({**{k: v for k, v in out.items() if k != 'test'}, **asdict(t)},
                         indent=2))
        return 0
    print(f'{args.split} {out["metric"]} over {t.users} users: A {out["mean_a"]:.4f}, '
          f'B {out["mean_b"]:.4f}')
    print(f'A - B = {t.mean_difference:+.4f} [{t.low:+.4f}, {t.high:+.4f}] '
          f'({t.confidence:.0%} bootstrap over users); Wilcoxon signed-rank p = '
          f'{t.p_value:.3g} ({t.nonzero} users differ)')
    return 0


COMMANDS = {'train': _train, 'tune': _tune, 'evaluate': _evaluate, 'recommend': _recommend,
            'compare': _compare, 'datasets': _datasets, 'build-dataset': _build_dataset}


def _split_overrides(parser: argparse.ArgumentParser, args, extra: list[str]) -> None:
    """``key=value`` overrides may follow options (``train --epochs 2 lr=1e-3``); anything
    else left over is an error of the subcommand."""
    stray = [a for a in extra if a.startswith('-') or '=' not in a or
             args.command not in ('train', 'tune')]
    if stray:
        sub = parser.commands.get(args.command, parser) if args.command else parser
        sub.error(f'unrecognized arguments: {" ".join(stray)}')
    if extra:
        args.overrides = list(args.overrides or []) + extra


def _report(err: BaseException) -> str:
    """The one-line message of a user error (with its notes, e.g. what a failed build kept)."""
    notes = [str(n) for n in getattr(err, '__notes__', ()) if str(n).strip()]
    return ' '.join([_message(err), *notes]).replace('\n', ' ') if notes else _message(err)


def _message(err: BaseException) -> str:
    from .data.validation import DatasetNotFoundError
    from .utils.io import describe_os_error
    if isinstance(err, DatasetNotFoundError):
        return err.summary
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    if isinstance(err, OSError) and not isinstance(err, (ValueError, FileNotFoundError)) \
            and err.errno is not None:
        return describe_os_error(err, err.filename or '?', 'cannot access')
    if isinstance(err, MemoryError) or _allocator_failure(err):
        return (f'out of memory{_allocation_size(str(err))}. Fix: lower batch_size / '
                f'eval_batch_size (or embedding_dim), or use a machine (or GPU) with more '
                f'memory')
    if isinstance(err, RecursionError):
        return ('an input is nested too deeply to be read (thousands of levels of lists or '
                'mappings). Fix: check the files the command reads (set MMSSL_PYG_DEBUG=1 to '
                'see which)')
    return str(err)


def _allocator_failure(err: BaseException) -> bool:
    """A RuntimeError of torch's CPU or CUDA allocator (its text names no file and no fix)."""
    import torch
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or isinstance(err, RuntimeError) and any(
        s in text for s in ("can't allocate memory", 'not enough memory', 'out of memory',
                            'DefaultCPUAllocator'))


def _allocation_size(text: str) -> str:
    """`` (tried to allocate 1.5 GiB)`` from an allocator's text, or nothing."""
    import re
    m = re.search(r'allocate (\d+) bytes', text)
    if m is not None:
        return f' (tried to allocate {int(m.group(1)) / 2**30:.2f} GiB)'
    m = re.search(r'allocate ([\d.]+ [KMGT]iB)', text)
    return f' (tried to allocate {m.group(1)})' if m is not None else \
        ('' if not text or 'alloc' in text or 'memory' in text else f' ({text})')


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _split_overrides(parser, args, extra)
    if args.command is None:
        parser.print_help()
        return 0
    rank = os.environ.get('RANK') if int(os.environ.get('WORLD_SIZE', '1') or 1) > 1 else None
    where = f' (rank {rank})' if rank is not None else ''
    prefix = f'mmssl-pyg {args.command}{where}'
    show = warnings.showwarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning):  # the library's data and run warnings
            print(f'{prefix}: warning: {message}', file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_warning
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, ImportError, RuntimeError, FloatingPointError,
            MemoryError, RecursionError) as err:
        # Bad arguments, config keys, files, data, outputs, missing optional packages, a
        # diverged loss: a message naming the culprit and the fix instead of a traceback
        # (MMSSL_PYG_DEBUG=1 shows it).
        if os.environ.get('MMSSL_PYG_DEBUG'):
            raise
        from .training.tracking import TrackerError
        hint = ''
        if isinstance(err, RuntimeError) and not isinstance(err, (ValueError, TrackerError)) \
                and not _allocator_failure(err):
            hint = ' (set MMSSL_PYG_DEBUG=1 for the traceback)'
        print(f'{prefix}: error: {_report(err)}{hint}', file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


if __name__ == '__main__':
    sys.exit(main())
