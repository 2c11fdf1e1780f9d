"""Run a plan of `dftrain experiments`: the setup stages in order, then the (variant, seed) chains
`run.parallel` at a time, then one `dftrain compare` per seed. A chain that fails is recorded and the
others go on; a stage held by another process is never run twice (OUT/.stages/NAME.lock)."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dftrain.errors import DftrainError
from dftrain.experiments.config import Experiment
from dftrain.experiments.plan import Chain, Plan, compare_stage
from dftrain.experiments.stages import Stage, is_done, run_stage


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # chain or stage name -> first line of the error
    seconds: dict[str, float] = field(default_factory=dict)



class _Printer:
    """Thread-safe one-line progress messages."""

    def __init__(self, console) -> None:
        self.console, self.lock = console, threading.Lock()

    def __call__(self, text: str) -> None:
        with self.lock:
            self.console.print(text, markup=False, highlight=False)  # stage labels contain [brackets]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def stage_lock(out: Path, name: str):
    """Hold OUT/.stages/NAME.lock while a stage runs, so that two `dftrain reproduce` processes on one
    folder never run the same stage into the same outputs. A lock left by a dead process is taken over."""
    lock = out / ".stages" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner and _pid_alive(owner):
                raise DftrainError(f"stage '{name}' is running in another process (pid {owner}); "
                                   f"wait for it or remove {lock}") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise DftrainError(f"could not take {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _run_one(out: Path, stage: Stage, outcome: Outcome, say: _Printer, label: str) -> None:
    if is_done(out, stage):
        outcome.reused.append(stage.name)
        say(f"{label} {stage.name}: reused")
        return
    with stage_lock(out, stage.name):
        if is_done(out, stage):  # finished by another process while we waited for the lock
            outcome.reused.append(stage.name)
            say(f"{label} {stage.name}: reused")
            return
        say(f"{label} {stage.name}: started (log: {out / 'logs' / (stage.name + '.log')})")
        result = run_stage(out, stage)
    outcome.ran.append(stage.name)
    outcome.seconds[stage.name] = round(result.seconds, 1)
    say(f"{label} {stage.name}: done in {result.seconds:.0f} s")


def _run_chain(out: Path, chain: Chain, outcome: Outcome, say: _Printer, label: str) -> None:
    for stage in chain.stages:
        _run_one(out, stage, outcome, say, label)


def run_plan(plan: Plan, experiment: Experiment, console=None) -> Outcome:
    """Setup stages in order (a failure stops everything), then the chains `run.parallel` at a time,
    then one `dftrain compare` per seed. Failures of chains are collected, not raised."""
    from rich.console import Console

    out = plan.layout.out
    say = _Printer(console or Console(stderr=True))
    outcome = Outcome()
    started = time.perf_counter()
    for index, stage in enumerate(plan.setup, 1):
        _run_one(out, stage, outcome, say, f"[setup {index}/{len(plan.setup)}]")

    total = len(plan.chains)
    with ThreadPoolExecutor(max_workers=experiment.run["parallel"]) as pool:
        futures = {pool.submit(_run_chain, out, chain, outcome, say, f"[{i}/{total}]"): chain
                   for i, chain in enumerate(plan.chains, 1)}
        for future in as_completed(futures):
            chain = futures[future]
            try:
                future.result()
            except DftrainError as exc:
                key = f"{chain.variant}_seed{chain.seed}"
                outcome.failed[key] = str(exc).splitlines()[0]
                say(f"{key} FAILED: {outcome.failed[key]}")

    for seed in experiment.seeds:
        stage = compare_stage(plan.layout, seed, [v.name for v in experiment.variants])
        if stage is None:
            continue
        try:
            _run_one(out, stage, outcome, say, "[compare]")
        except DftrainError as exc:
            outcome.failed[stage.name] = str(exc).splitlines()[0]
    outcome.seconds["total"] = round(time.perf_counter() - started, 1)
    return outcome

