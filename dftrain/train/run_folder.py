"""What a run folder already holds, checked before training writes into it.

- Training into a folder that holds another run's checkpoints without --resume used to rewind
  `latest_complete`, replace pipeline/ and mix two runs in metrics.jsonl: it is refused unless
  --overwrite (which starts over: checkpoints/, metrics.jsonl and pipeline/ are removed).
- Resuming with options that change what is trained (lr, batch, data, fusion, ...) used to be
  accepted while the checkpoint's state partly kept the old values: refused, naming each
  difference, unless --allow-changes. Options that only say how long or how loudly to run
  may change.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dftrain.errors import DftrainError
from dftrain.train import checkpoint as ckpt

# Options a resumed run may change: how far to go, when to save, what to print and where.
MAY_CHANGE_ON_RESUME = frozenset({
    "steps", "resume", "export", "log_every", "log_interval", "tensorboard", "progress", "checkpoint_every",
    "keep_checkpoints", "extra", "out", "overwrite", "allow_changes", "num_workers",
})
PATH_OPTIONS = frozenset({"model", "shards", "objects", "deepspeed"})
# Options added later: a checkpoint whose config lacks one ran as this value says.
BEFORE_THE_OPTION = {"object_label": "first", "object_flip": False, "object_latent": "mean"}
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "pipeline", "config.yaml")


def _comparable(name: str, value: Any) -> Any:
    if name in PATH_OPTIONS and value:
        if isinstance(value, list | tuple):  # --shards is repeatable; a run saved before held one path
            return [str(Path(v).resolve()) for v in value]
        return [str(Path(value).resolve())] if name == "shards" else str(Path(value).resolve())
    return value


def changed_options(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'name saved -> now' for every option that differs and may not change on resume."""
    saved = {**{k: v for k, v in BEFORE_THE_OPTION.items() if k in now}, **saved}
    return [f"{name} {saved[name]!r} -> {now[name]!r}" for name in sorted(set(saved) & set(now))
            if name not in MAY_CHANGE_ON_RESUME and _comparable(name, saved[name]) != _comparable(name, now[name])]


def check_run_folder(config: dict[str, Any]) -> None:
    """Raise DftrainError when training with `config` would silently mix with what `out` holds."""
    run_dir = Path(config["out"])
    ckpt_dir = ckpt.checkpoints_dir(run_dir)
    tag = ckpt.latest_complete(ckpt_dir) if ckpt_dir.is_dir() else None
    resume = config.get("resume")
    if resume is None:
        if tag is not None and not config.get("overwrite"):
            raise DftrainError(
                f"{run_dir} already holds a run (checkpoint {tag}): continue it with --resume auto, "
                "start over with --overwrite, or choose another --out")
        return
    point = ckpt.find_resume_point(run_dir) if resume == "auto" else ckpt.resolve_checkpoint(resume)
    if point is None or config.get("allow_changes"):
        return
    saved = ckpt.read_meta(*point).get("config")
    if not isinstance(saved, dict):
        return  # a checkpoint from before options were recorded
    changes = changed_options(saved, config)
    if changes:
        raise DftrainError(
            f"--resume {resume}: options differ from the checkpoint's run ({'; '.join(changes)}); "
            "resume with the same options, or pass --allow-changes")


def clear_run_outputs(run_dir: Path) -> None:
    """--overwrite: remove the earlier run's outputs (rank 0, before anything is written)."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
