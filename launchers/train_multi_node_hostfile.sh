#!/usr/bin/env bash
# Exact command (several nodes, the deepspeed launcher over passwordless ssh, run on the first node):
#   deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$PORT" --module dftrain train --config "$CONFIG" --deepspeed ds_configs/zero3.json "$@"
#
# Usage: HOSTFILE=launchers/hostfile.example CONFIG=run.yaml launchers/train_multi_node_hostfile.sh
# The hostfile lists "hostname slots=GPUS" per node (see hostfile.example). Every node needs the
# same checkout, virtual environment and paths (shards on a shared file system, or the same copy),
# and ssh from this node to every node without a password. The run folder (--out) must be on a
# shared file system: every rank writes its checkpoint partition there.
# Multi-node deepspeed starts the other nodes with pdsh (install it on this node) and passes them
# only the variables listed in ~/.deepspeed_env (or ./.deepspeed_env), one NAME=value per line:
# put PATH (with the venv's bin), OMP_NUM_THREADS and NCCL_* settings there.
set -euo pipefail
HOSTFILE=${HOSTFILE:?set HOSTFILE=path/to/hostfile}
CONFIG=${CONFIG:?set CONFIG=path/to/run.yaml}
DS_CONFIG=${DS_CONFIG:-ds_configs/zero3.json}
# the first host line: comments (#) and blank lines skipped
MASTER_ADDR=${MASTER_ADDR:-$(awk '!/^[[:space:]]*(#|$)/ {print $1; exit}' "$HOSTFILE")}
if [[ -z "$MASTER_ADDR" ]]; then echo "error: no host line in $HOSTFILE" >&2; exit 1; fi
PORT=${PORT:-29500}
COMMAND=(deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$PORT"
  --module dftrain train --config "$CONFIG" --deepspeed "$DS_CONFIG" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "${COMMAND[@]}"; echo; exit 0; fi  # DRY_RUN=1: print, do not run
exec "${COMMAND[@]}"
