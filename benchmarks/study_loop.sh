#!/bin/sh
# Run the study of benchmarks/PROTOCOL.md one trial per process until every selected study has
# its trials (exit 3 from `study.py step`) or a step fails. Arguments go to `study.py step`, e.g.
#   nohup benchmarks/study_loop.sh --models mf lightgcn > study.log 2>&1 &
# PYTHON selects the interpreter (default .venv/bin/python of this checkout).
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
while :; do
    "$PY" -m benchmarks.study step "$@"
    rc=$?
    [ "$rc" -eq 0 ] || break
done
[ "$rc" -eq 3 ] && exit 0
exit "$rc"
