#!/usr/bin/env bash
# Exact command (one node, N GPUs, torchrun):
#   torchrun --standalone --nproc_per_node "$NGPUS" -m dftrain train --config "$CONFIG" --deepspeed ds_configs/zero2.json "$@"
#
# Usage: NGPUS=8 CONFIG=run.yaml launchers/train_single_node_torchrun.sh [--steps 20000 ...]
# Any `dftrain train` flag after the script name overrides the YAML config.
set -euo pipefail
NGPUS=${NGPUS:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
CONFIG=${CONFIG:?set CONFIG=path/to/run.yaml}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero2.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec torchrun --standalone --nproc_per_node "$NGPUS" -m dftrain train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
