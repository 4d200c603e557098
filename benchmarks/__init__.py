"""The benchmarks of mmssl-pyg: scripts that regenerate every published table and plot.

Run them from the repository root as modules, e.g. ``python -m benchmarks.run accuracy``
(see ``benchmarks/README.md``); they are clients of the library and import it like any user.
"""
