#!/usr/bin/env bash
# Caption generalization on N nodes under SLURM: one task per GPU (one model replica per task).
#
#   sbatch --nodes 4 launchers/generalize_slurm.sh shards/laion shards/laion-general /models/Qwen2.5-7B-Instruct
#
# With the default --dedup global, three job steps run one after another, each on every task, so every
# task finishes a pass before any starts the next (a job step is the barrier):
#   collect     task r reads the input shards i with i % SLURM_NTASKS == r and writes their distinct captions;
#   generalize  task r generalizes the parts p of the caption table with p % SLURM_NTASKS == r (LLM work);
#   write       task r writes the output shards i with i % SLURM_NTASKS == r from the table.
# DEDUP=shard instead runs one step in which each task generalizes its own shards (dedup within a shard).
# Re-submitting the same command resumes: finished runs, parts and shards are verified and skipped.
# Environment knobs: BACKEND (vllm), TP (GPUs per model replica, 1), BATCH (unique captions per LLM call;
# empty: every caption of a part in one vLLM call), DEDUP (global), PARTS (table parts, 64; more parts than
# tasks keeps them all busy), EXTRA_ARGS (more `dftrain generalize` options, e.g.
# "--engine-arg gpu_memory_utilization=0.9"), DFTRAIN (how to run dftrain).
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
BATCH=${BATCH:-}
DEDUP=${DEDUP:-global}
PARTS=${PARTS:-64}
DFTRAIN=${DFTRAIN:-python -m dftrain}
EXTRA_ARGS=${EXTRA_ARGS:-}

ARGS=(--shards "$IN" --out "$OUT" --backend "$BACKEND" --tensor-parallel-size "$TP" --dedup "$DEDUP"
      --dedup-parts "$PARTS" --no-progress)
if [[ -n "$MODEL" ]]; then ARGS+=(--model "$MODEL"); fi
if [[ -n "$BATCH" ]]; then ARGS+=(--batch-size "$BATCH"); fi

# With TP > 1 give each task TP GPUs instead (e.g. --ntasks-per-node=2 --gpus-per-task=4 with TP=4).
# --kill-on-bad-exit=0: one failing task does not stop the others; its work stays to be redone, and the
# next pass says in one line what is missing.
step() {
  srun --kill-on-bad-exit=0 env OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}" \
    $DFTRAIN generalize "${ARGS[@]}" "$@" $EXTRA_ARGS || true
}
if [[ "$DEDUP" == "global" ]]; then
  step --dedup-pass collect
  step --dedup-pass generalize
  step --dedup-pass write
else
  step
fi

# The last rank to finish writes OUT/manifest.json; this checks it and says what is missing.
$DFTRAIN generalize --shards "$IN" --out "$OUT" --dedup "$DEDUP" --dedup-parts "$PARTS" --finalize
