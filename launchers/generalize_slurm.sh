#!/usr/bin/env bash
# Caption generalization on N nodes under SLURM: one task per GPU, each task takes the
# shards i with i % SLURM_NTASKS == SLURM_PROCID (dftrain reads them from the environment).
#
#   sbatch --nodes 4 launchers/generalize_slurm.sh shards/laion shards/laion-general /models/Qwen2.5-7B-Instruct
#
# Re-submitting the same command resumes: finished shards are verified and skipped.
# Environment knobs: BACKEND (vllm), TP (GPUs per model replica, 1), BATCH (512),
# EXTRA_ARGS (more `dftrain generalize` options), DFTRAIN (how to run dftrain).
#SBATCH --job-name=dftrain-generalize
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

IN=${1:?usage: sbatch launchers/generalize_slurm.sh IN_SHARDS OUT_SHARDS [MODEL_FOLDER]}
OUT=${2:?usage: sbatch launchers/generalize_slurm.sh IN_SHARDS OUT_SHARDS [MODEL_FOLDER]}
MODEL=${3:-}
BACKEND=${BACKEND:-vllm}
TP=${TP:-1}
BATCH=${BATCH:-512}
DFTRAIN=${DFTRAIN:-python -m dftrain}
EXTRA_ARGS=${EXTRA_ARGS:-}

MODEL_ARGS=()
if [[ -n "$MODEL" ]]; then MODEL_ARGS=(--model "$MODEL"); fi

# With TP > 1 give each task TP GPUs instead (e.g. --ntasks-per-node=2 --gpus-per-task=4 with TP=4).
# --kill-on-bad-exit=0: one failing task does not stop the others; its shards stay to be redone.
srun --kill-on-bad-exit=0 env OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}" \
  $DFTRAIN generalize --shards "$IN" --out "$OUT" --backend "$BACKEND" "${MODEL_ARGS[@]}" \
  --tensor-parallel-size "$TP" --batch-size "$BATCH" --no-progress $EXTRA_ARGS || true

# The last rank to finish writes OUT/manifest.json; this checks it and says what is missing.
$DFTRAIN generalize --shards "$IN" --out "$OUT" --finalize
