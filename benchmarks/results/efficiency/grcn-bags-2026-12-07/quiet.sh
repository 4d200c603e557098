#!/bin/sh
# Quiet A/B of GRCN and LightGCN on full TikTok: b0efc5c (/work/eff37) against HEAD (/work/eff38),
# study jobs paused (SIGSTOP) for the duration.
PIDS=$(pgrep -f "benchmarks/study.py step|study_loop.sh|study-chain|benchmarks.study final|benchmarks.study cross|benchmarks.run")
echo "pausing: $PIDS"; date -u
kill -STOP $PIDS
PY=/work/main/.venv/bin/python
for w in eff37 eff38 eff37 eff38; do
  cd /work/$w && $PY -m benchmarks.efficiency_full --datasets tiktok --models grcn --threads 2 --epochs 4 --out /tmp/s38/q-$w-$(date +%H%M%S) 2>&1 | tail -3
done
kill -CONT $PIDS; date -u; echo resumed
