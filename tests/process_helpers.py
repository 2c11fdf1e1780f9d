"""Subprocesses for tests that cannot outlive their test.

A command that times out is killed with its whole process group (torchrun's ranks, the demo's and
reproduce's stage commands): killing only the direct child leaves its children running, and on two
cores they slow every later test until those time out too.
"""

from __future__ import annotations

import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process still in `proc`'s process group (it was started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def start_group(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen in a process group of its own; pair with kill_group in a finally."""
    return subprocess.Popen(cmd, start_new_session=True, **kwargs)


def run_group(cmd: list[str], *, timeout: float, capture_output: bool = True, text: bool = True,
              **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run, except that on timeout (or once it ends) nothing it started is left running."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = start_group(cmd, text=text, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
