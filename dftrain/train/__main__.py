"""`python -m dftrain.train ARGS` == `dftrain train ARGS`, tolerating `--local_rank=N` anywhere.

The deepspeed launcher puts `--local_rank=N` straight after the module name, before any
subcommand, so launch scripts use this entry point:

    deepspeed --num_gpus 8 --module dftrain.train --config run.yaml
"""

from __future__ import annotations

import os
import sys


def split_local_rank(argv: list[str]) -> tuple[list[str], str | None]:
    """Remove `--local_rank=N` / `--local-rank N` from argv; return (rest, N)."""
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(("--local_rank=", "--local-rank=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return rest, value


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
