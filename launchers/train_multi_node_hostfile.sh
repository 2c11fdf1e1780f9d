#!/usr/bin/env bash
# Exact command (several nodes, the deepspeed launcher over passwordless ssh, run on the first node):
#   deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$PORT" --module dftrain.train --config "$CONFIG" --deepspeed ds_configs/zero3.json "$@"
#
# Usage: HOSTFILE=launchers/hostfile.example CONFIG=run.yaml launchers/train_multi_node_hostfile.sh
# The hostfile lists "hostname slots=GPUS" per node (see hostfile.example). Every node needs the
# same checkout, virtual environment and paths (shards on a shared file system, or the same copy),
# and ssh from this node to every node without a password. The run folder (--out) must be on a
# shared file system: every rank writes its checkpoint partition there.
set -euo pipefail
HOSTFILE=${HOSTFILE:?set HOSTFILE=path/to/hostfile}
CONFIG=${CONFIG:?set CONFIG=path/to/run.yaml}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero3.json}
MASTER_ADDR=${MASTER_ADDR:-$(head -n1 "$HOSTFILE" | awk '{print $1}')}
PORT=${PORT:-29500}
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$PORT" \
  --module dftrain.train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@"
