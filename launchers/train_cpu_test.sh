#!/usr/bin/env bash
# Exact command (the CPU form the tests use: 2 ranks over gloo on one machine, one thread each):
#   OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu torchrun --standalone --nproc_per_node 2 -m dftrain train \
#     --model "$MODEL" --shards "$SHARDS" --objects "$OBJECTS" --out "$OUT" --zero-stage 2 --precision bf16 \
#     --steps 20 --micro-batch-size 2 --lr 1e-3 --warmup-steps 0 "$@"
#
# Usage: MODEL=runs/demo/model SHARDS=shards/synthetic/train OBJECTS=shards/synthetic/objects OUT=runs/cpu \
#        launchers/train_cpu_test.sh [--zero-stage 3 ...]
# (fp16 is refused on CPU; bf16 and fp32 work. The first start compiles DeepSpeed's shm op, ~70 s, once.)
set -euo pipefail
NPROC=${NPROC:-2}
export OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu
exec torchrun --standalone --nproc_per_node "$NPROC" -m dftrain train \
  --model "${MODEL:?}" --shards "${SHARDS:?}" --objects "${OBJECTS:?}" --out "${OUT:?}" --zero-stage 2 --precision bf16 \
  --steps 20 --micro-batch-size 2 --lr 1e-3 --warmup-steps 0 "$@"
