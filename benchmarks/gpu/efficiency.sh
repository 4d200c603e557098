#!/bin/bash
# Issue 24's GPU checks as one timed script for a lent GPU machine (15 minutes of device time,
# one command of at most 10 minutes): every model's full-size efficiency beside LightGCN in one
# process on the GPU, then where MMSSL's GPU step spends its time.
#
#   benchmarks/gpu/efficiency.sh OUT [DEVICE]
#
# Phases, each under its own `timeout` so a slow one cannot take the others' time (seconds,
# overridable): MovieLens-100K (ML_S, 120), TikTok (TT_S, 300), the operator profile (PROF_S,
# 90). Everything lands flat in OUT (the device tool brings back at most 8 files, 2 folders
# down): efficiency-full-<dataset>-<device>.{md,csv}, profile-tiktok-<device>.md, log.txt.
# A phase cut by its timeout writes no table; its finished models are in log.txt.
# It runs from a checkout without installing it (PYTHONPATH=checkout; the GPU image has torch
# and torch_geometric, and none of these phases needs Optuna or wandb). TikTok's raw files are
# tracked; MovieLens-100K's are built here (`make movielens-100k`) and ignored, so the device call
# names `datasets/movielens-100k` in its carry (3.3 MiB; its processed/ folder saves the build).
#
# Not here: an NCCL run of 2 processes needs 2 GPUs (NCCL refuses two ranks on one device, and
# init_distributed refuses LOCAL_RANK >= the GPU count); with WORLD_SIZE=1 torchrun starts no
# process group, so a 1-process run would check nothing of NCCL.
#
# Dry run on a CPU (checks the script, not the GPU):
#   DATASETS_ML=tiktok-mini DATASETS_TT=tiktok-mini MODELS="mf" EPOCHS=2 \
#     benchmarks/gpu/efficiency.sh /tmp/eff-dry cpu
set -u
OUT=${1:?usage: efficiency.sh OUT [DEVICE]}
DEVICE=${2:-cuda}
ML_S=${ML_S:-120}
TT_S=${TT_S:-300}
PROF_S=${PROF_S:-90}
EPOCHS=${EPOCHS:-3}
DATASETS_ML=${DATASETS_ML:-movielens-100k}
DATASETS_TT=${DATASETS_TT:-tiktok}
MODELS=${MODELS:-}                  # empty: every registered model
PYTHON=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
mkdir -p "$OUT"
LOG=$OUT/log.txt
models_arg=()
[ -n "$MODELS" ] && models_arg=(--models $MODELS)
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null) changed/untracked paths: $(git status --porcelain 2>/dev/null | wc -l)"
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  echo "cpus: $(nproc)"
  $PYTHON -c 'import torch, torch_geometric; print("torch", torch.__version__, "pyg", torch_geometric.__version__, "cuda", torch.cuda.is_available())'
} >> "$LOG" 2>&1

phase() {  # phase <seconds> <what> <command...>
  local s=$1 what=$2; shift 2
  local t0=$(date +%s)
  echo "== $what (limit $s s) $(date -u +%H:%M:%S)" >> "$LOG"
  timeout "$s" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "== $what: exit $rc after $(( $(date +%s) - t0 )) s" >> "$LOG"
}

phase "$ML_S" "efficiency $DATASETS_ML" $PYTHON -m benchmarks.efficiency_full \
  --datasets $DATASETS_ML --device "$DEVICE" --threads 1 --epochs "$EPOCHS" "${models_arg[@]}" --out "$OUT"
phase "$TT_S" "efficiency $DATASETS_TT" $PYTHON -m benchmarks.efficiency_full \
  --datasets $DATASETS_TT --device "$DEVICE" --threads 1 --epochs "$EPOCHS" "${models_arg[@]}" --out "$OUT"
phase "$PROF_S" "op_profile $DATASETS_TT" $PYTHON -m benchmarks.op_profile \
  --dataset "$DATASETS_TT" --models lightgcn mmssl --device "$DEVICE" --threads 1 --out "$OUT"
# the profile's long per-operator CSVs stay behind (the device tool returns at most 8 files)
rm -f "$OUT"/profile-*.csv
ls -l "$OUT" >> "$LOG"
cat "$LOG"
