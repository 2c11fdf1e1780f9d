"""The shard stage: round trip, dedup, bad-caption policy, resume, ranks, SIGKILL + re-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from generalize_helpers import ScriptedBackend, build_tiny_lm, read_folder, write_input_shards

from dftrain.generalize.stage import RECEIPT_DIR, generalize_shards
from dftrain.outputs import MARKER_NAME
from dftrain.shards import ShardError

REPO = Path(__file__).resolve().parents[1]

CAPTIONS = [
    ["Nike Air Max 90 running shoes, size 10", "A cat named Tom sleeping on a sofa",
     "Nike Air Max 90 running shoes, size 10", "a dog"],
    ["Sony WH-1000XM4 headphones on a desk", "Vintage 1967 Ford Mustang in Los Angeles"],
    ["Mount Fuji in Japan, 2019", "A cat named Tom sleeping on a sofa"],
]


def answer(caption: str, strict: bool) -> str:
    table = {"Nike Air Max 90 running shoes, size 10": "running shoes",
             "A cat named Tom sleeping on a sofa": '"A cat sleeping."',
             "a dog": "a dog",
             "Sony WH-1000XM4 headphones on a desk": "WH-1000XM4",
             "Vintage 1967 Ford Mustang in Los Angeles": "Here is a general caption: an old car"}
    return table.get(caption, "")


def run(in_dir, out_dir, backend, **kwargs):
    kwargs.setdefault("score", "off")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("faithful", False)  # the meaning check has its own tests (test_generalize_faithful.py)
    return generalize_shards(in_dir, out_dir, backend="embedded", backend_instance=backend, rank=kwargs.pop("rank", 0),
                             world_size=kwargs.pop("world_size", 1), **kwargs)


def test_round_trip_keeps_keys_and_bytes(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    backend = ScriptedBackend(answer)
    report = run(in_dir, tmp_path / "out", backend, batch_size=2)
    assert report.manifest_written and report.written == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]

    before, after = read_folder(in_dir), read_folder(tmp_path / "out")
    assert list(after) == list(before)
    for key, old in before.items():
        new = after[key]
        assert new["jpg"] == old["jpg"] and new["extra.bin"] == old["extra.bin"]
        assert set(new) == set(old)
        meta = new["json"]
        assert {k: meta[k] for k in old["json"]} == old["json"]
        assert meta["orig_caption"] == old["txt"]
        assert meta["generalized_caption"] == new["txt"]
        assert meta["llm"]["backend"] == "scripted" and meta["llm"]["model"] == "scripted-v1"
        assert len(meta["llm"]["prompt_hash"]) == 16
        assert "generality_before" in meta and "generality_after" in meta

    by_caption = {s["json"]["orig_caption"]: (s["txt"], s["json"]["fallback_step"], s["json"]["fallback"])
                  for s in after.values()}
    assert by_caption == {
        "Nike Air Max 90 running shoes, size 10": ("running shoes", "llm", None),
        "A cat named Tom sleeping on a sofa": ("A cat sleeping", "llm", None),
        "a dog": ("a dog", "llm", None),
        "Sony WH-1000XM4 headphones on a desk": ("headphones", "rule", "kept_number"),
        "Vintage 1967 Ford Mustang in Los Angeles": ("an old car", "llm", None),
        "Mount Fuji in Japan, 2019": ("an image", "rule", "empty"),
    }
    # In-shard dedup: shard 0 has 4 samples but 3 distinct captions, asked once each.
    first_pass = [c for call in backend.calls for c in call]
    assert first_pass.count("Nike Air Max 90 running shoes, size 10") == 1

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["kind"] == "generalized" and manifest["total_samples"] == 8
    assert manifest["extra"]["unique_captions"] == 7
    assert manifest["extra"]["steps"] == {"llm": 6, "rule": 2}


def test_bad_captions_follow_the_policy(tmp_path):
    long_ok = ("word " * 2000)[:10_000]
    too_long = "x" * 10_001
    in_dir = write_input_shards(tmp_path / "in", [["", "   ", long_ok, too_long, b"caf\xe9 au lait", "a red car"]])
    backend = ScriptedBackend(lambda c, s: "a thing")
    run(in_dir, tmp_path / "out", backend)
    out = read_folder(tmp_path / "out")
    # Empty, over-10,000-character and non-UTF-8 captions: counted skips (the shard reader's policy).
    assert sorted(s["json"]["orig_caption"] for s in out.values()) == sorted([long_ok, "a red car"])
    receipt = json.loads((tmp_path / "out" / RECEIPT_DIR / "shard-000000.tar.json").read_text())
    assert receipt["skipped"] == {"empty txt": 2, "caption too long": 1, "non-utf8 txt": 1}
    assert sorted(k for k, _ in receipt["skipped_keys"]) == ["000000000", "000000001", "000000003", "000000004"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["extra"]["skipped"] == receipt["skipped"]
    # A 10,000-character caption is accepted; the prompt gets at most 512 characters of it.
    assert max(len(c) for call in backend.calls for c in call) <= 512
    with pytest.raises(ShardError, match="empty txt"):
        run(in_dir, tmp_path / "strict", backend, strict=True)


def test_drop_fallback_removes_the_sample_and_counts_it(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", [["Sony WH-1000XM4 headphones", "a red car"]])
    run(in_dir, tmp_path / "out", ScriptedBackend(lambda c, s: "WH-1000XM4" if "Sony" in c else "a car"),
        fallback="drop")
    out = read_folder(tmp_path / "out")
    assert [s["txt"] for s in out.values()] == ["a car"]
    receipt = json.loads((tmp_path / "out" / RECEIPT_DIR / "shard-000000.tar.json").read_text())
    assert receipt["dropped_keys"] == ["000000000"] and receipt["steps"] == {"drop": 1, "llm": 1}


def test_resume_skips_finished_shards_and_redoes_damaged_ones(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    out = tmp_path / "out"
    run(in_dir, out, ScriptedBackend(answer))
    digests = {p.name: p.read_bytes() for p in out.glob("*.tar")}

    class Exploding(ScriptedBackend):
        def complete(self, *a, **k):
            raise AssertionError("a finished shard was redone")

    report = run(in_dir, out, Exploding(answer))
    assert report.skipped_done == sorted(digests) and report.written == []

    # A damaged output shard no longer matches its receipt: only that one is redone.
    with open(out / "shard-000001.tar", "ab") as handle:
        handle.write(b"garbage")
    backend = ScriptedBackend(answer)
    report = run(in_dir, out, backend)
    assert report.written == ["shard-000001.tar"] and report.manifest_written
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == digests

    # Other settings redo every shard (the receipts name the change), and then reuse again.
    assert run(in_dir, out, backend, max_words=3).written == sorted(digests)
    assert run(in_dir, out, backend, max_words=3).skipped_done == sorted(digests)
    assert run(in_dir, out, backend, max_words=3, overwrite=True).written == sorted(digests)


@pytest.mark.parametrize("dedup", ["shard", "global"])
def test_two_ranks_cover_every_shard_exactly_once(tmp_path, dedup):
    shards = [[f"caption {i} of shard {s}" for i in range(2)] for s in range(5)]
    in_dir = write_input_shards(tmp_path / "in", shards)
    out = tmp_path / "out"
    backend = ScriptedBackend()
    if dedup == "global":  # each pass on every rank before the next one starts (what the launcher does)
        for step in ("collect", "generalize"):
            for rank in (0, 1):
                report = run(in_dir, out, backend, rank=rank, world_size=2, dedup_pass=step, dedup_parts=4)
                assert report.written == [] and not (out / "manifest.json").exists()
        assert sorted(c for call in backend.calls for c in call) == sorted(c for s in shards for c in s)
        options = {"dedup_pass": "write", "dedup_parts": 4}
    else:
        options = {"dedup": "shard"}
    first = run(in_dir, out, backend, rank=0, world_size=2, **options)
    assert first.written == ["shard-000000.tar", "shard-000002.tar", "shard-000004.tar"]
    assert not first.manifest_written and not (out / "manifest.json").exists()
    second = run(in_dir, out, backend, rank=1, world_size=2, **options)
    assert second.written == ["shard-000001.tar", "shard-000003.tar"] and second.manifest_written
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == [f"shard-{i:06d}.tar" for i in range(5)]
    assert sorted(read_folder(out)) == sorted(read_folder(in_dir))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def cli(in_dir, out_dir, model, *extra, env=None, dedup="shard"):
    args = [sys.executable, "-m", "dftrain", "generalize", "--shards", str(in_dir), "--out", str(out_dir),
            "--backend", "transformers", "--model", str(model), "--score", "off", "--batch-size", "1",
            "--no-progress", "--dedup", dedup, *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(args, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.multiproc
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_lm):
    shards = [[f"a red car number {s}{i} parked on a street in Paris" for i in range(4)] for s in range(8)]
    in_dir = write_input_shards(tmp_path / "in", shards)
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    proc = cli(in_dir, killed, tiny_lm)
    deadline = time.time() + 120
    while not list((killed / RECEIPT_DIR).glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "manifest.json").exists(), "the run finished before the kill: make it longer"
    done_before = len(list((killed / RECEIPT_DIR).glob("*.json")))
    assert 1 <= done_before < 8

    # The re-run and the uninterrupted reference run in this process (same settings as the CLI).
    options = {"backend": "transformers", "model": str(tiny_lm), "score": "off", "batch_size": 1, "progress": False,
               "rank": 0, "world_size": 1, "dedup": "shard"}
    rerun = generalize_shards(in_dir, killed, **options)
    assert len(rerun.skipped_done) == done_before and rerun.manifest_written
    generalize_shards(in_dir, clean, **options)

    def listing(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        return [(s["name"], s["samples"], s["sha256"]) for s in manifest["shards"]]

    assert listing(killed) == listing(clean)
    assert sorted(p.name for p in killed.iterdir() if p.name not in (RECEIPT_DIR, MARKER_NAME)) == sorted(
        [f"shard-{i:06d}.tar" for i in range(8)] + ["manifest.json"])  # no temp or duplicate shard left
    assert read_folder(killed).keys() == read_folder(in_dir).keys()


@pytest.mark.multiproc
def test_two_rank_processes_from_the_environment(tmp_path, tiny_lm):
    shards = [[f"photo of a cat sleeping {s}", "a dog"] for s in range(4)]
    in_dir = write_input_shards(tmp_path / "in", shards)
    out = tmp_path / "out"
    procs = [cli(in_dir, out, tiny_lm, env={"RANK": str(r), "WORLD_SIZE": "2"}) for r in range(2)]
    reports = []
    for p in procs:
        stdout, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [r["written"] for r in reports] == [["shard-000000.tar", "shard-000002.tar"],
                                               ["shard-000001.tar", "shard-000003.tar"]]
    # Each rank writes its receipts before checking the others', so the later one always sees all.
    assert json.loads((out / "manifest.json").read_text())["total_samples"] == 8
    (out / "manifest.json").unlink()
    finisher = subprocess.run([sys.executable, "-m", "dftrain", "generalize", "--shards", str(in_dir), "--out",
                               str(out), "--finalize", "--dedup", "shard"], cwd=REPO, capture_output=True, text=True)
    assert finisher.returncode == 0, finisher.stderr
    assert json.loads((out / "manifest.json").read_text())["total_samples"] == 8
    assert sorted(read_folder(out)) == sorted(read_folder(in_dir))
