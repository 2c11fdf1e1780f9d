"""The launchers compute what they promise (dry-run mode: the command is printed, not run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_hostfile_launcher_takes_the_first_host_line_not_a_comment(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# deepspeed hostfile\n\n   \n  # another comment\ngpu-node-07 slots=8\ngpu-node-08 slots=8\n")
    env = {**os.environ, "HOSTFILE": str(hostfile), "CONFIG": "run.yaml", "DRY_RUN": "1"}
    env.pop("MASTER_ADDR", None)
    result = subprocess.run(["bash", str(REPO / "launchers" / "train_multi_node_hostfile.sh"), "--steps", "5"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "--master_addr gpu-node-07 " in result.stdout and result.stdout.rstrip().endswith("--steps 5")


def test_hostfile_launcher_refuses_a_hostfile_without_hosts(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# only comments\n\n")
    env = {**os.environ, "HOSTFILE": str(hostfile), "CONFIG": "run.yaml", "DRY_RUN": "1"}
    env.pop("MASTER_ADDR", None)
    result = subprocess.run(["bash", str(REPO / "launchers" / "train_multi_node_hostfile.sh")], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "no host line" in result.stderr


def test_slurm_scripts_write_their_log_where_slurm_can_open_it():
    """SLURM opens --output before the job runs: a folder the job would create is not there yet."""
    for script in (REPO / "launchers").glob("*"):
        for line in script.read_text().splitlines():
            if line.startswith("#SBATCH --output="):
                assert "/" not in line.split("=", 1)[1], f"{script.name}: {line}"
    assert "--shutdown-timeout" in (REPO / "launchers" / "train_slurm.sbatch").read_text()
