"""The ``mmssl-pyg`` command line: parse arguments, then call the library."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='mmssl-pyg',
        description='Multi-modal self-supervised recommendation (MMSSL) on PyTorch Geometric.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.add_parser('train', help='train a model (default: MMSSL on the bundled TikTok data)')
    sub.add_parser('evaluate', help='evaluate a checkpoint on the validation or test split')
    sub.add_parser('recommend', help='top-k unseen items for users, to stdout or CSV/Parquet')
    sub.add_parser('datasets', help='list datasets and print their statistics')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    parser.error(f'command {args.command!r} is not implemented yet')
    return 2


if __name__ == '__main__':
    sys.exit(main())
