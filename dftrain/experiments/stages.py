"""Run a sequence of `dftrain` subcommands as resumable stages (used by demo and reproduce).

Each stage is one subcommand run in its own process, as a user would run it, with
its output in a log file. A stage that failed stops the sequence with the tail of its
log, and everything finished before it is kept.

Reuse is decided by content (dftrain.fingerprint), recorded in RUN/.stages/<name>.json:
a finished stage is reused only when its arguments are the same, the content of every
input it names (each existing path among its arguments, except its outputs) is the same,
and its declared outputs still hold what it wrote. So a stage whose input was rebuilt with
other content runs again, and the stages after it see their inputs change in turn; a
stage rerun that wrote identical content leaves the later ones reused.
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

# Flags whose value is an output of the stage, not an input (every dftrain stage writes through --out).
OUTPUT_FLAGS = ("--out", "--objects-out")


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


def stage_inputs(stage: Stage) -> list[Path]:
    """The existing paths among a stage's arguments that it reads (not --out values, not its outputs)."""
    outputs = {Path(p) for p in stage.outputs}
    found = []
    for i, arg in enumerate(stage.args):
        if i > 0 and stage.args[i - 1] in OUTPUT_FLAGS:
            continue
        if os.sep not in arg and not os.path.isabs(arg):
            continue  # a plain word or number, not a path
        path = Path(arg)
        if path.exists() and path not in outputs:
            found.append(path)
    return found


def content_digests(paths: list[Path]) -> dict[str, str]:
    """path -> content digest (dftrain.fingerprint.tree_sha256; "missing" when absent)."""
    from dftrain.fingerprint import tree_sha256

    digests = {}
    for path in paths:
        try:
            digests[str(path)] = tree_sha256(path)
        except (FileNotFoundError, DftrainError):
            digests[str(path)] = "missing"
    return digests


def stale_reason(run_dir: Path, stage: Stage) -> str | None:
    """Why the stage must run (no record, other arguments, an input or output changed), or None."""
    marker = _marker(run_dir, stage)
    missing = [str(p) for p in stage.outputs if not Path(p).exists()]
    if missing:
        return f"output missing: {missing[0]}"
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return "not run yet"
    if record.get("fingerprint") != stage.fingerprint():
        return "arguments changed"
    recorded_inputs = record.get("inputs")
    if not isinstance(recorded_inputs, dict):
        return "no content record (made by an older dftrain)"
    current = content_digests(stage_inputs(stage))
    changed = sorted(set(current) ^ set(recorded_inputs)) or [p for p in current if current[p] != recorded_inputs[p]]
    if changed:
        return f"input changed: {changed[0]}"
    outputs_now = content_digests([Path(p) for p in stage.outputs])
    changed = [p for p, digest in outputs_now.items() if (record.get("outputs") or {}).get(p) != digest]
    if changed:
        return f"output changed since it was written: {changed[0]}"
    return None


def is_done(run_dir: Path, stage: Stage) -> bool:
    return stale_reason(run_dir, stage) is None


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
    inputs = content_digests(stage_inputs(stage))  # what this run reads, taken before it starts
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
    from dftrain.files import atomic_write_bytes

    marker = _marker(run_dir, stage)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"fingerprint": stage.fingerprint(), "seconds": round(seconds, 1), "args": stage.args,
              "ranks": stage.ranks, "inputs": inputs, "outputs": content_digests([Path(p) for p in stage.outputs])}
    atomic_write_bytes(marker, json.dumps(record, indent=1).encode("utf-8"))
    return StageResult(stage.name, "ran", seconds)


def run_stages(run_dir: Path, stages: list[Stage], console=None) -> list[StageResult]:
    """Run stages in order with a per-stage progress display; return what each did."""
    from rich.console import Console

    console = console or Console(stderr=True)
    results: list[StageResult] = []
    total = len(stages)
    for index, stage in enumerate(stages, 1):
        label = f"[{index}/{total}] {stage.name}"
        reason = stale_reason(run_dir, stage)
        if reason is None:
            console.print(f"{label}: reused (finished earlier with the same arguments and inputs)")
            results.append(StageResult(stage.name, "reused", 0.0))
            continue
        if _marker(run_dir, stage).exists():
            console.print(f"{label}: running again ({reason})")
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
