"""Output folders (dftrain/outputs.py): ownership marker, one writer per output, disk errors in one line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from dftrain.outputs import (
    LOCK_NAME,
    MARKER_NAME,
    OutputError,
    claim_output,
    disk_error_message,
    disk_errors,
)


def test_new_and_empty_folders_are_claimed_and_marked(tmp_path):
    (tmp_path / "empty").mkdir()
    for name in ("new/deeper", "empty"):
        with claim_output(tmp_path / name, "shard build") as claim:
            assert claim.lock_path.is_file()
        marker = json.loads((tmp_path / name / MARKER_NAME).read_text())
        assert marker["stage"] == "shard build"
        assert not (tmp_path / name / LOCK_NAME).exists()  # a clean exit leaves no lock file


def test_foreign_folder_is_refused_untouched_unless_overwrite(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("notes.tmp", "manifest.json", "shard-000000.tar"):
        (folder / name).write_text(name)
    with pytest.raises(OutputError, match="dftrain did not write"):
        with claim_output(folder, "shard build"):
            pytest.fail("must not enter")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "notes.tmp", "shard-000000.tar"]
    with claim_output(folder, "shard build", overwrite=True):
        pass
    assert (folder / MARKER_NAME).is_file()


def test_folder_of_another_stage_is_refused(tmp_path):
    with claim_output(tmp_path / "out", "evaluate"):
        pass
    with pytest.raises(OutputError, match="made by `dftrain evaluate`"):
        with claim_output(tmp_path / "out", "shard build"):
            pass
    with claim_output(tmp_path / "out", "evaluate"):  # its own stage may write it again
        pass


def test_second_writer_is_refused_and_first_keeps_its_files(tmp_path):
    folder = tmp_path / "out"
    with claim_output(folder, "shard build"):
        (folder / "shard-000000.tar.tmp").write_bytes(b"in progress")
        with pytest.raises(OutputError, match=r"being written by another dftrain process \(pid \d+"):
            with claim_output(folder, "shard build"):
                pass
        assert (folder / "shard-000000.tar.tmp").read_bytes() == b"in progress"


def test_scoped_locks_let_ranks_share_a_folder(tmp_path):
    folder = tmp_path / "gen"
    with claim_output(folder, "generate", scope="rank0"), claim_output(folder, "generate", scope="rank1"):
        with pytest.raises(OutputError, match="being written"):
            with claim_output(folder, "generate", scope="rank1"):
                pass


def test_dead_run_temp_files_are_removed_by_the_next_run(tmp_path):
    folder = tmp_path / "out"
    script = (
        "import os, sys\n"
        "from dftrain.outputs import claim_output\n"
        f"with claim_output({str(folder)!r}, 'shard build'):\n"
        f"    open({str(folder / 'shard-000000.tar.tmp')!r}, 'wb').write(b'half')\n"
        f"    open({str(folder / '.manifest.json.abc.tmp')!r}, 'wb').write(b'half')\n"
        "    os._exit(9)\n"  # dies holding the lock: no clean-up runs
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    assert (folder / LOCK_NAME).is_file()  # left behind by the dead run
    (folder / "keep.json").write_text("{}")
    with claim_output(folder, "shard build") as claim:
        assert claim.inherited is not None and "pid" in claim.inherited
        assert sorted(p.name for p in claim.removed) == [".manifest.json.abc.tmp", "shard-000000.tar.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME, "keep.json"]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                         (errno.EDQUOT, "disk quota exceeded"), (errno.EACCES, "permission denied")])
def test_disk_errors_become_one_line_naming_the_path(tmp_path, code, words):
    with pytest.raises(OutputError) as caught:
        with disk_errors(tmp_path):
            raise OSError(code, os.strerror(code))  # no filename: the folder is named
    verb = "access" if code == errno.EACCES else "write"
    assert str(caught.value).startswith(f"cannot {verb} {tmp_path}: {words}")
    assert "\n" not in str(caught.value)
    with pytest.raises(OutputError, match=rf"cannot {verb} /x/y\.tar"):
        with disk_errors(tmp_path):
            raise OSError(code, os.strerror(code), "/x/y.tar")


def test_other_os_errors_pass_through(tmp_path):
    assert disk_error_message(FileNotFoundError(errno.ENOENT, "gone", "a")) is None
    with pytest.raises(FileNotFoundError):
        with disk_errors(tmp_path):
            open(tmp_path / "missing")


def test_folder_an_earlier_dftrain_wrote_counts_as_ours(tmp_path):
    legacy = tmp_path / "old-shards"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps({"schema_version": 1, "command": "dftrain shard build ..."}))
    with claim_output(legacy, "shard build"):
        pass
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"schema_version": 1, "command": "img2dataset"}))
    with pytest.raises(OutputError):
        with claim_output(foreign, "shard build"):
            pass
