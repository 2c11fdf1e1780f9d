"""Run a sequence of `dftrain` subcommands as resumable stages (used by demo and reproduce).

Each stage is one subcommand run in its own process, as a user would run it, with
its output in a log file. A stage that finished with the same arguments and whose
outputs still exist is reused on a re-run; a stage that failed stops the sequence
with the tail of its log, and everything finished before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dftrain.errors import DftrainError


@dataclass
class Stage:
    name: str
    args: list[str]  # arguments after `dftrain`
    outputs: list[Path]  # all must exist for the stage to count as done
    ranks: int = 1  # > 1: launched with torchrun on this many local processes
    env: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        text = json.dumps({"args": self.args, "ranks": self.ranks, "env": self.env}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def command(self) -> list[str]:
        if self.ranks > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={self.ranks}"]
            return [*launcher, "-m", "dftrain", *self.args]
        return [sys.executable, "-m", "dftrain", *self.args]


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "reused" | "failed"
    seconds: float


def _marker(run_dir: Path, stage: Stage) -> Path:
    return run_dir / ".stages" / f"{stage.name}.json"


def is_done(run_dir: Path, stage: Stage) -> bool:
    marker = _marker(run_dir, stage)
    if not marker.exists() or not all(Path(p).exists() for p in stage.outputs):
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == stage.fingerprint()
    except (OSError, ValueError):
        return False


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_stage(run_dir: Path, stage: Stage) -> StageResult:
    """Run one stage (or reuse it); raise DftrainError with the log's tail if it fails."""
    if is_done(run_dir, stage):
        return StageResult(stage.name, "reused", 0.0)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{stage.name}.log"
    env = {**os.environ, **stage.env}
    env.setdefault("DS_ACCELERATOR", "cpu")
    if stage.ranks > 1:
        env["OMP_NUM_THREADS"] = "1"  # processes share the cores
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(stage.command()) + "\n")
        log.flush()
        proc = subprocess.run(stage.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise DftrainError(
            f"stage '{stage.name}' failed (exit {proc.returncode}); log: {log_path}\n{_log_tail(log_path)}"
        )
    missing = [str(p) for p in stage.outputs if not Path(p).exists()]
    if missing:
        raise DftrainError(f"stage '{stage.name}' finished but did not write {', '.join(missing)}; log: {log_path}")
    marker = _marker(run_dir, stage)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": stage.fingerprint(), "seconds": round(seconds, 1),
                                  "args": stage.args, "ranks": stage.ranks}))
    return StageResult(stage.name, "ran", seconds)


def run_stages(run_dir: Path, stages: list[Stage], console=None) -> list[StageResult]:
    """Run stages in order with a per-stage progress display; return what each did."""
    from rich.console import Console

    console = console or Console(stderr=True)
    results: list[StageResult] = []
    total = len(stages)
    for index, stage in enumerate(stages, 1):
        label = f"[{index}/{total}] {stage.name}"
        if is_done(run_dir, stage):
            console.print(f"{label}: reused (finished earlier with the same arguments)")
            results.append(StageResult(stage.name, "reused", 0.0))
            continue
        with console.status(f"{label}: running  (log: {run_dir / 'logs' / (stage.name + '.log')})"):
            result = run_stage(run_dir, stage)
        console.print(f"{label}: done in {result.seconds:.0f} s")
        results.append(result)
    return results


def summary_table(results: list[StageResult]):
    from rich.table import Table

    table = Table(title="stages")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for r in results:
        table.add_row(r.name, r.status, f"{r.seconds:.0f}")
    return table
