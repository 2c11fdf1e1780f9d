"""--dedup global: every distinct caption of the whole input generalized once, output equal to the per-shard path,
resumable per pass (SIGKILL + re-run), split across ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from generalize_helpers import ScriptedBackend, build_tiny_lm, jpeg_bytes, read_folder, write_input_shards

from dftrain.errors import ConfigError
from dftrain.generalize.passes import TableIncomplete
from dftrain.generalize.receipts import RECEIPT_DIR
from dftrain.generalize.stage import generalize_shards
from dftrain.generalize.table import TABLE_DIR, encode_run, part_of
from dftrain.outputs import MARKER_NAME

REPO = Path(__file__).resolve().parents[1]

# LAION-like: re-uploads across shards, one of them with other whitespace.
SHARDS = [
    ["a red car on a street", "Sony WH-1000XM4 headphones on a desk", "a cat on a sofa", "a red car on a street"],
    ["a cat on a sofa", "Mount Fuji in Japan, 2019", "a  red car on a street "],
    ["a dog", "a cat on a sofa", "Sony WH-1000XM4 headphones on a desk"],
    ["a dog"],
]


def answer(caption: str, strict: bool) -> str:
    table = {"a red car on a street": "a car", "Sony WH-1000XM4 headphones on a desk": "WH-1000XM4",
             "a cat on a sofa": '"A cat."', "a dog": "an animal", "Mount Fuji in Japan, 2019": "a mountain"}
    return table.get(caption, "a thing")


def run(in_dir, out_dir, backend, **kwargs):
    kwargs.setdefault("score", "off")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("faithful", False)
    return generalize_shards(in_dir, out_dir, backend="embedded", backend_instance=backend, rank=kwargs.pop("rank", 0),
                             world_size=kwargs.pop("world_size", 1), **kwargs)


def tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_each_distinct_caption_is_asked_once_and_the_shards_equal_the_per_shard_path(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", SHARDS)
    per_shard, table = ScriptedBackend(answer), ScriptedBackend(answer)
    run(in_dir, tmp_path / "shard", per_shard, dedup="shard")
    report = run(in_dir, tmp_path / "global", table, dedup="global", dedup_parts=3)

    first_asked = Counter(c for call in table.calls for c in call if c in {c for s in SHARDS for c in s})
    assert set(first_asked.values()) == {1}  # each distinct caption once, the whitespace variant included
    assert len(first_asked) == 5 and len(table.calls[0]) == 5  # the small parts are asked in one batch
    assert Counter(c for call in per_shard.calls for c in call)["a cat on a sofa"] == 3  # once per shard before
    assert tars(tmp_path / "global") == tars(tmp_path / "shard")  # byte for byte
    out = read_folder(tmp_path / "global")
    assert out["000000006"]["json"]["orig_caption"] == "a  red car on a street "  # the raw text is kept
    assert out["000000006"]["txt"] == "a car"

    manifest = json.loads((tmp_path / "global" / "manifest.json").read_text())
    assert manifest["extra"]["dedup"] == {"parts": 3, "samples": 11, "unique_captions": 5, "dedup_ratio": 2.2}
    assert report.dedup == manifest["extra"]["dedup"]
    assert manifest["extra"]["unique_captions"] == 10  # distinct within each shard, summed: what --dedup shard asks
    assert manifest["extra"]["steps"] == json.loads((tmp_path / "shard" / "manifest.json").read_text())["extra"][
        "steps"]


def test_runs_are_sorted_and_cut_into_parts_by_key():
    data, offsets, samples = encode_run(["b", "a", "b", " a ", "c"], 4)
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert [r[0] for r in rows] == sorted(r[0] for r in rows) and {r[1]: r[2] for r in rows} == {"a": 2, "b": 2,
                                                                                                    "c": 1}
    assert offsets[0] == 0 and offsets[-1] == len(data) and offsets == sorted(offsets) and sum(samples) == 5
    for part in range(4):
        chunk = data[offsets[part]:offsets[part + 1]].decode().splitlines()
        assert all(part_of(json.loads(line)[0], 4) == part for line in chunk)


def test_a_changed_shard_asks_only_its_new_captions(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", SHARDS)
    run(in_dir, tmp_path / "out", ScriptedBackend(answer), dedup_parts=2)
    write_input_shards(in_dir, [*SHARDS[:3], ["a dog", "a horse in a field"]])
    backend = ScriptedBackend(answer)
    report = run(in_dir, tmp_path / "out", backend, dedup_parts=2)
    assert backend.calls == [["a horse in a field"]] and report.written == ["shard-000003.tar"]
    assert report.passes["collect"]["written"] == ["shard-000003.tar"]
    fresh = ScriptedBackend(answer)
    run(in_dir, tmp_path / "fresh", fresh, dedup_parts=2)
    assert tars(tmp_path / "out") == tars(tmp_path / "fresh")
    # Another number of parts cuts the table differently: every pass again, the same shards.
    run(in_dir, tmp_path / "out", ScriptedBackend(answer), dedup_parts=5)
    assert tars(tmp_path / "out") == tars(tmp_path / "fresh")


def test_passes_out_of_order_and_several_ranks_in_one_step_are_one_line_errors(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", SHARDS)
    with pytest.raises(TableIncomplete, match="collect pass has not finished 4 of 4"):
        run(in_dir, tmp_path / "out", ScriptedBackend(answer), dedup_pass="generalize")
    run(in_dir, tmp_path / "out", ScriptedBackend(answer), dedup_pass="collect", dedup_parts=2)
    with pytest.raises(TableIncomplete, match="generalize pass has not finished 2 of 2 part"):
        run(in_dir, tmp_path / "out", ScriptedBackend(answer), dedup_pass="write", dedup_parts=2)
    with pytest.raises(ConfigError, match="run the passes as separate steps"):
        run(in_dir, tmp_path / "out", ScriptedBackend(answer), rank=0, world_size=2)
    proc = subprocess.run([sys.executable, "-m", "dftrain", "generalize", "--shards", str(in_dir), "--out",
                           str(tmp_path / "out"), "--dedup-pass", "write", "--dedup-parts", "2", "--score", "off",
                           "--no-faithful", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the generalize pass has not finished")


# --------------------------------------------------------------------------- SIGKILL and re-run, each pass


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def heavy_shards(folder: Path, n_shards: int, payload: int) -> Path:
    """Shards with repeated captions and a large extra field (reading and writing them takes a while)."""
    from dftrain.shards import Manifest, write_shard

    folder.mkdir(parents=True)
    infos = []
    for s in range(n_shards):
        samples = [{"__key__": f"{s:04d}{i:03d}", "jpg": jpeg_bytes(s * 10 + i), "txt": f"a red car number {k} in Paris",
                    "json": {"i": i}, "extra.bin": os.urandom(payload)}
                   for i, k in enumerate((s % 7, (s + 3) % 11, s % 5))]
        infos.append(write_shard(folder / f"shard-{s:06d}.tar", samples))
    Manifest(kind="train", shards=infos, command="test").save(folder)
    return folder


PASS_FILES = {"collect": f"{TABLE_DIR}/runs/*.json", "generalize": f"{TABLE_DIR}/parts/*.json",
              "write": f"{RECEIPT_DIR}/*.json"}


@pytest.mark.multiproc
@pytest.mark.parametrize("step", ["collect", "generalize", "write"])
def test_sigkill_in_each_pass_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_lm, step):
    n_shards, parts = (40, 4) if step != "generalize" else (8, 8)
    in_dir = heavy_shards(tmp_path / "in", n_shards, payload=400_000 if step != "generalize" else 10)
    options = {"backend": "transformers", "model": str(tiny_lm), "score": "off", "batch_size": 1, "progress": False,
               "faithful": False, "rank": 0, "world_size": 1, "dedup_parts": parts}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    earlier = ("collect", "generalize", "write")[:("collect", "generalize", "write").index(step)]
    for name in earlier:
        generalize_shards(in_dir, killed, dedup_pass=name, **options)

    args = [sys.executable, "-m", "dftrain", "generalize", "--shards", str(in_dir), "--out", str(killed),
            "--backend", "transformers", "--model", str(tiny_lm), "--score", "off", "--batch-size", "1",
            "--no-progress", "--no-faithful", "--dedup-parts", str(parts), "--dedup-pass", step]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = parts if step == "generalize" else n_shards
    deadline = time.time() + 180
    while not list(killed.glob(PASS_FILES[step])) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(killed.glob(PASS_FILES[step])))
    assert proc.returncode == -signal.SIGKILL and 1 <= done_before < total, "the pass finished before the kill"

    for name in ("collect", "generalize", "write")[len(earlier):]:  # the re-run: the killed pass, then the rest
        generalize_shards(in_dir, killed, dedup_pass=name, **options)
    generalize_shards(in_dir, clean, **options)
    assert tars(killed) == tars(clean)
    leftovers = [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and (killed / "manifest.json").is_file() and (killed / MARKER_NAME).is_file()


# --------------------------------------------------------------------------- the LLM does not wait for scoring


class SlowScorer:
    """A generality scorer that takes its time; records when each call ran."""

    def __init__(self):
        self.spans: list[tuple[float, float]] = []

    def score_many(self, texts):
        started = time.perf_counter()
        time.sleep(0.3)
        self.spans.append((started, time.perf_counter()))
        return [{"generality": float(len(t))} for t in texts]


class TimedBackend(ScriptedBackend):
    def __init__(self, answer):
        super().__init__(answer)
        self.starts: list[float] = []

    def complete(self, prompts, **kwargs):
        self.starts.append(time.perf_counter())
        return super().complete(prompts, **kwargs)


@pytest.mark.parametrize("dedup", ["shard", "global"])
def test_the_next_llm_call_starts_while_the_previous_work_is_scored(tmp_path, monkeypatch, dedup):
    shards = [[f"a red car number {i}"] for i in range(3)]  # one distinct caption per shard (and per part)
    in_dir = write_input_shards(tmp_path / "in", shards)
    parts = {"dedup_parts": 1} if dedup == "shard" else {"dedup_parts": 64}
    monkeypatch.setattr("dftrain.generalize.passes.GROUP_CAPTIONS", 1)  # one part per LLM call
    outputs = {}
    for overlap in (True, False):
        scorer, backend = SlowScorer(), TimedBackend(lambda c, s: "a car")
        monkeypatch.setattr("dftrain.generalize.stage.load_optional_scorer", lambda mode, scorer=scorer: scorer)
        run(in_dir, tmp_path / f"out-{overlap}", backend, score="on", dedup=dedup, overlap=overlap, **parts)
        assert len(backend.starts) == 3 and len(scorer.spans) == 6  # before + after, per shard / part
        first_scored = scorer.spans[1][1]  # the first shard's (part's) scores are done
        if overlap:
            assert backend.starts[1] < first_scored  # the LLM went on meanwhile
        else:
            assert backend.starts[1] > first_scored
        outputs[overlap] = tars(tmp_path / f"out-{overlap}")
        scores = [s["json"]["generality_before"] for s in read_folder(tmp_path / f"out-{overlap}").values()]
        assert scores == [float(len(c[0])) for c in shards]
    assert outputs[True] == outputs[False]
