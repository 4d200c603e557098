#!/bin/bash
# One timed GPU campaign (issue 15): equal-budget Optuna tuning of every model on each dataset,
# then 5 paired seeds of every tuned configuration plus MMSSL's paper preset, all on one GPU.
#
#   benchmarks/gpu/campaign.sh OUT [TUNE_SECONDS] [END_SECONDS] [DEVICE]
#
# Every (model, dataset) study runs in its own process at the same time, with the same trial
# cap and the same --timeout (summed trial seconds = wall seconds for one process), so every
# model gets the same budget on the same shared GPU. Phase 2 starts when phase 1 ends and gives
# each of its 5 seed units an equal share of the time left before END_SECONDS (a unit cut by
# that budget is tested at its best validation epoch so far, and the report counts it).
# Everything lands in OUT: logs, the studies (SQLite), the tuned presets, the accuracy units.
# It runs from a checkout without installing it (python3 -m mmssl_pyg; PYTHONPATH=checkout).
set -u
OUT=${1:?usage: campaign.sh OUT [TUNE_SECONDS] [END_SECONDS] [DEVICE]}
TUNE_S=${2:-270}
END_S=${3:-540}
DEVICE=${4:-cuda}
MODELS=${MODELS:-"lightgcn mf sgl vbpr mmgcn grcn lattice freedom bm3 mmssl"}
DATASETS=${DATASETS:-"tiktok movielens-100k"}
TRIALS=${TRIALS:-40}
SMOKE_DATASET=${SMOKE_DATASET:-tiktok-mini}
PHASES=${PHASES:-"tune eval"}        # "eval" alone: the tuned presets already in the checkout
EVAL_MODELS=${EVAL_MODELS:-$MODELS}
PRESET_ROW=${PRESET_ROW:-1}          # 1: also MMSSL's preset (paper) row in phase 2
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export MKL_NUM_THREADS=1 WANDB_MODE=disabled
mkdir -p "$OUT/logs" "$OUT/tune" "$OUT/acc" "$OUT/presets"
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null) dirty: $(git status --porcelain 2>/dev/null | wc -l)"
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  nproc; python3 -c 'import torch, torch_geometric, optuna; print(torch.__version__, torch_geometric.__version__, optuna.__version__, torch.cuda.is_available())'
} > "$OUT/logs/machine.txt" 2>&1
cat "$OUT/logs/machine.txt"

# fail fast: one short MMSSL run on the device (SMOKE=0 skips it)
if [ "${SMOKE:-1}" = 1 ] && ! timeout 120 python3 -m mmssl_pyg train --model mmssl --dataset "$SMOKE_DATASET" \
      --device "$DEVICE" --wandb disabled --run-dir "$OUT/smoke" epochs=2 \
      > "$OUT/logs/smoke.log" 2>&1; then
  echo "SMOKE FAILED after $(elapsed)s"; tail -30 "$OUT/logs/smoke.log"; exit 3
fi
echo "smoke ok at $(elapsed)s"; grep -i "s/epoch\|epoch 2\|test" "$OUT/logs/smoke.log" | tail -3

# phase 1: one study per (model, dataset), all at once, the same trials and seconds each
left=$(( TUNE_S - $(elapsed) ))
case " $PHASES " in *" tune "*) ;; *) DATASETS_TUNE="" ;; esac
for d in ${DATASETS_TUNE-$DATASETS}; do for m in $MODELS; do
  timeout $(( left + 90 )) python3 -m mmssl_pyg tune --model "$m" --dataset "$d" \
    --trials "$TRIALS" --timeout "$left" --device "$DEVICE" --wandb disabled \
    --run-dir "$OUT/tune/$m-$d" --preset-dir "$OUT/presets" epochs=200 \
    > "$OUT/logs/tune-$m-$d.log" 2>&1 &
done; done
wait
echo "phase 1 done at $(elapsed)s"
grep -h "best trial" "$OUT"/logs/tune-*.log
mkdir -p mmssl_pyg/configs/tuned && cp "$OUT"/presets/*.yaml mmssl_pyg/configs/tuned/ 2>/dev/null
case " $PHASES " in *" eval "*) ;; *) END_S=$(elapsed) ;; esac

# phase 2: 5 paired seeds of every tuned configuration (+ MMSSL's preset), one process each
left=$(( END_S - $(elapsed) ))
per_unit=$(python3 -c "print(round(max($left - 30, 30) / 5 / 60, 2))")
echo "phase 2: ${per_unit} min per unit"
for d in $DATASETS; do
  [ "$left" -gt 30 ] || break
  for m in $EVAL_MODELS; do
    timeout $(( left - 5 )) python3 -m benchmarks.run accuracy --dataset "$d" --models "$m" \
      --tuned presets --id-datasets --seeds 0 1 2 3 4 --device "$DEVICE" --wandb disabled \
      --max-minutes "$per_unit" --no-reuse --no-progress --out "$OUT/acc/$m-$d" \
      > "$OUT/logs/acc-$m-$d.log" 2>&1 &
  done
  [ "$PRESET_ROW" = 1 ] && timeout $(( left - 5 )) python3 -m benchmarks.run accuracy --dataset "$d" --models mmssl \
    --id-datasets --seeds 0 1 2 3 4 --device "$DEVICE" --wandb disabled \
    --max-minutes "$per_unit" --no-reuse --no-progress --out "$OUT/acc/mmssl-preset-$d" \
    > "$OUT/logs/acc-mmssl-preset-$d.log" 2>&1 &
done
wait
echo "phase 2 done at $(elapsed)s"
tar czf "$OUT/campaign.tgz" -C "$OUT" logs tune acc presets 2>/dev/null
echo "packed at $(elapsed)s"
