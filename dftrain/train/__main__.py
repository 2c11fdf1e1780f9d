"""`python -m dftrain.train ARGS` == `dftrain train ARGS`, tolerating `--local_rank=N` anywhere.

The deepspeed launcher puts `--local_rank=N` straight after the module name, before any
subcommand, so launch scripts use this entry point:

    deepspeed --num_gpus 8 --module dftrain.train --config run.yaml
"""

from __future__ import annotations

import os
import sys

from dftrain.distributed import split_local_rank


def main() -> None:
    from dftrain.cli import app
    from dftrain.errors import DftrainError

    argv, local_rank = split_local_rank(sys.argv[1:])
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", local_rank)
    try:
        app(["train", *argv], prog_name="dftrain")
    except DftrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
