#!/usr/bin/env bash
# Exact command (one node, N GPUs, the deepspeed launcher):
#   deepspeed --num_gpus "$NGPUS" --master_port "$PORT" --module dftrain train --config "$CONFIG" --deepspeed ds_configs/zero2.json "$@"
#
# Usage: NGPUS=8 CONFIG=run.yaml launchers/train_single_node_deepspeed.sh [--steps 20000 ...]
# `python -m dftrain` accepts the `--local_rank=N` the deepspeed launcher inserts after the module
# name, before the subcommand (dftrain.cli.main strips it and sets LOCAL_RANK).
set -euo pipefail
NGPUS=${NGPUS:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
CONFIG=${CONFIG:?set CONFIG=path/to/run.yaml}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero2.json}
PORT=${PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec deepspeed --num_gpus "$NGPUS" --master_port "$PORT" --module dftrain train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
