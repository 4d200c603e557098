"""``python -m mmssl_pyg`` runs the ``mmssl-pyg`` command line (for checkouts that are not
pip-installed, e.g. on a machine that has its own torch)."""
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
