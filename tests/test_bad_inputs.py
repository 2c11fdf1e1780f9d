"""Bad input, one row per case: the command as a user runs it, its exit code, its one-line message, and
that nothing done before was lost. No row may print a traceback.

Each row's setup builds small crafted files (headers that claim huge sizes, sparse files, patched JPEG
headers), so the whole table runs in well under a minute. Cases of issue 14 that other parts of dftrain
own (checkpoint loading, the trainer at run time) have their tests beside that code; the typed training
options have rows here and their unit tests in tests/test_train_config.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from generalize_helpers import build_tiny_lm, write_input_shards
from PIL import Image
from process_helpers import run_group
from shards_helpers import (
    jpeg_claiming,
    make_jpeg,
    slow_dftrain,
    write_dataset,
    write_raw_tar,
    write_tar_with_huge_member,
)

from dftrain.shards import Manifest, ShardInfo, iter_samples, sha256_file

GOOD = [("000000000.jpg", make_jpeg(0)), ("000000000.txt", b"a red star poster")]


@dataclass
class Run:
    """What a row runs and expects; `keep` asserts that nothing done before was lost."""

    args: list[str]
    code: int
    message: str  # a regex that must match the output; for a failure, the one `error:` line
    keep: Callable[[], None] | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. a read-only mount namespace
    env: dict[str, str] = field(default_factory=dict)
    max_rss_mb: int | None = None  # peak memory of the command


# --- inputs --------------------------------------------------------------------------------------------

def shard_folder(folder: Path, tars: list[Path], samples: list[int], *, real_sha: bool = True) -> Path:
    """A manifest over tars another tool wrote (a fake checksum where hashing a sparse file would be slow:
    only validate reads checksums)."""
    shards = [ShardInfo(t.name, n, sha256_file(t) if real_sha else "0" * 64, t.stat().st_size)
              for t, n in zip(tars, samples, strict=True)]
    Manifest(kind="train", shards=shards, command="another tool").save(folder)
    return folder


def crafted(tmp: Path, members: list[tuple[str, bytes]], samples: int) -> Path:
    folder = tmp / "shards"
    folder.mkdir()
    return shard_folder(folder, [write_raw_tar(folder / "shard-000000.tar", GOOD + members)], [samples])


def image_folder(tmp: Path, names: dict[str, bytes]) -> Path:
    folder = tmp / "images"
    for name, data in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def captions_file(tmp: Path, text: str, suffix: str = ".json") -> Path:
    path = tmp / f"captions{suffix}"
    path.write_text(text)
    return path


def noise_jpeg(seed: int, size: int) -> bytes:
    import io

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unchanged(folder: Path) -> Callable[[], None]:
    before = snapshot(folder)

    def check() -> None:
        assert snapshot(folder) == before

    return check


def samples_of(folder: Path) -> list[dict]:
    return list(iter_samples(folder, rank=0, world_size=1, decode=False, require=()))


def build_args(images: Path, captions: Path, out: Path, *extra: str) -> list[str]:
    return ["shard", "build", "--images", str(images), "--captions", str(captions), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def generalize_args(shards: Path, out: Path, lm: Path) -> list[str]:
    return ["generalize", "--shards", str(shards), "--out", str(out), "--backend", "transformers", "--model", str(lm),
            "--score", "off", "--no-progress"]


def generalize_here(shards: Path, out: Path, lm: Path):
    from dftrain.generalize.stage import generalize_shards

    return generalize_shards(shards, out, backend="transformers", model=str(lm), score="off", progress=False,
                             rank=0, world_size=1)


# --- sandboxes for disks that refuse writes ------------------------------------------------------------

def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def read_only(folder: Path) -> list[str]:
    """A prefix that runs the command with `folder` read-only (a private read-only bind mount as root;
    file permissions otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    if _can_unshare():
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(folder)]
    if os.geteuid() == 0:
        pytest.skip("needs unshare(1) to make a read-only folder as root")
    folder.chmod(0o555)
    return []


def full_disk(folder: Path) -> list[str]:
    """A prefix that runs the command with a 256 KiB disk mounted at `folder` (root), else a 256 KiB
    file-size limit (ulimit -f: EFBIG, which dftrain reports the same way)."""
    folder.mkdir(parents=True, exist_ok=True)
    if _can_unshare():
        script = 'mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(folder)]
    return ["sh", "-c", 'ulimit -f 256 && exec "$@"', "sh"]


# --- the rows ------------------------------------------------------------------------------------------

def member_claiming_50_gib_validate(tmp):
    folder = tmp / "shards"
    folder.mkdir()
    tar = write_tar_with_huge_member(folder / "shard-000000.tar", GOOD, "000000001.jpg", 50 * 2**30)
    shard_folder(folder, [tar], [2])
    return Run(["shard", "validate", str(folder)], 1,
               "problem: shard-000000.tar sample 000000001: member too large", keep=unchanged(folder),
               max_rss_mb=400)


def member_claiming_50_gib_generalize(tmp, lm):
    folder = tmp / "shards"
    folder.mkdir()
    tar = write_tar_with_huge_member(folder / "shard-000000.tar", GOOD, "000000001.jpg", 50 * 2**30)
    shard_folder(folder, [tar], [2])

    def keep():
        assert [s["__key__"] for s in samples_of(tmp / "out")] == ["000000000"]

    return Run(generalize_args(folder, tmp / "out", lm), 0, "member too large", keep=keep, max_rss_mb=1500)


def sparse_2_gib_member_generalize(tmp, lm):
    folder = tmp / "shards"
    folder.mkdir()
    tar = write_tar_with_huge_member(folder / "shard-000000.tar", GOOD, "000000001.jpg", 2 * 2**30, sparse=True)
    shard_folder(folder, [tar], [3], real_sha=False)

    def keep():
        assert [s["__key__"] for s in samples_of(tmp / "out")] == ["000000000", "999999999"]

    return Run(generalize_args(folder, tmp / "out", lm), 0, "member too large", keep=keep, max_rss_mb=1500)


def sparse_member_validate(tmp):
    folder = tmp / "shards"
    folder.mkdir()
    tar = write_tar_with_huge_member(folder / "shard-000000.tar", GOOD, "000000001.jpg", 80 * 2**20, sparse=True)
    shard_folder(folder, [tar], [3])
    return Run(["shard", "validate", str(folder)], 1, "sample 000000001: member too large", max_rss_mb=300)


def jpeg_claiming_13000_squared_build(tmp):
    images = image_folder(tmp, {"ok.jpg": make_jpeg(1), "bomb.jpg": jpeg_claiming(13000, 13000)})
    captions = captions_file(tmp, json.dumps({"ok": "a cat", "bomb": "a bomb"}))

    def keep():
        assert [s["json"]["caption_key"] for s in samples_of(tmp / "out")] == ["ok"]

    return Run(build_args(images, captions, tmp / "out"), 0, re.escape("skipped 1 (image too large: 1)"), keep=keep,
               max_rss_mb=300)


def jpeg_claiming_13000_squared_validate(tmp):
    folder = crafted(tmp, [("000000001.jpg", jpeg_claiming(13000, 13000)), ("000000001.txt", b"x")], 2)
    return Run(["shard", "validate", str(folder)], 1, "sample 000000001: image too large", max_rss_mb=300)


def bomb_training_image_evaluate(tmp):
    train = crafted(tmp, [("000000001.jpg", jpeg_claiming(20000, 20000)), ("000000001.txt", b"x"),
                          ("000000002.jpg", make_jpeg(2)), ("000000002.txt", b"y")], 3)
    gens = tmp / "gens"
    gens.mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(gens / f"{i:06d}_000.png")

    def keep():
        report = json.loads((tmp / "eval" / "report.json").read_text())
        assert report["n_train"] == 2 and report["skipped"]["train_shards"] == {"image too large": 1}

    return Run(["evaluate", "--generations", str(gens), "--train-shards", str(train), "--out", str(tmp / "eval"),
                "--no-cache"], 0, "sample 000000001: image too large", keep=keep)


def unsafe_key_validate(tmp):
    folder = crafted(tmp, [("../evil.jpg", make_jpeg(1)), ("../evil.txt", b"x")], 2)
    return Run(["shard", "validate", str(folder)], 1, "sample '../evil': unsafe key")


def unsafe_keys_generalize_twice(tmp, lm):
    folder = crafted(tmp, [("../evil.jpg", make_jpeg(1)), ("../evil.txt", b"x"),
                           ("/abs.jpg", make_jpeg(2)), ("/abs.txt", b"y")], 3)
    generalize_here(folder, tmp / "out", lm)  # the first run: it used to crash, on every re-run too

    def keep():
        assert [s["__key__"] for s in samples_of(tmp / "out")] == ["000000000"]

    return Run(generalize_args(folder, tmp / "out", lm), 0, "already generalized", keep=keep)


def undecodable_object_bank_image(tmp):
    bank = tmp / "bank"
    with_bad = [{"__key__": "000000000", "jpg": make_jpeg(0), "cls": 0, "json": {"class_name": "cup"}},
                {"__key__": "000000001", "jpg": make_jpeg(1)[:200], "cls": 0, "json": {"class_name": "cup"}},
                {"__key__": "000000002", "jpg": b"not an image", "cls": 0, "json": {"class_name": "cup"}}]
    from dftrain.shards import ShardWriter

    with ShardWriter(bank, kind="objects") as writer:
        for sample in with_bad:
            writer.write(sample)
    script = ("from dftrain.train.data import ObjectBank\n"
              f"bank = ObjectBank({str(bank)!r}, precomputed=False, resolution=16)\n"
              "print('object bank', len(bank), dict(bank.stats.skipped))\n")
    return Run(["-c", script], 0, re.escape("object bank 1 {'undecodable image': 2}"))


def readonly_output_folder(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    captions = captions_file(tmp, json.dumps({"a": "a cat"}))
    locked = tmp / "locked"
    prefix = read_only(locked)
    return Run(build_args(images, captions, locked / "out"), 1,
               f"error: cannot (write|access) {locked / 'out'}: (read-only file system|permission denied)",
               keep=unchanged(images), prefix=prefix)


def full_disk_during_build(tmp):
    images = image_folder(tmp, {f"im{i}.jpg": noise_jpeg(i, 256) for i in range(8)})  # ~1 MB of JPEGs
    captions = captions_file(tmp, json.dumps({f"im{i}": f"noise {i}" for i in range(8)}))
    earlier = tmp / "earlier"
    write_dataset(earlier, n=3)
    disk = tmp / "disk"
    return Run(build_args(images, captions, disk / "out"), 1,
               f"error: cannot write {disk / 'out'}[^:]*: (no space left on device|file too large)",
               keep=unchanged(earlier), prefix=full_disk(disk))


def second_build_into_the_same_folder(tmp):
    images = image_folder(tmp, {f"im{i}.jpg": make_jpeg(i) for i in range(8)})
    captions = captions_file(tmp, json.dumps({f"im{i}": f"caption {i}" for i in range(8)}))
    out = tmp / "out"
    first = subprocess.Popen(slow_dftrain(0.5, *build_args(images, captions, out)), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not list(out.glob("*.tar.tmp")) and time.time() < deadline:  # the first build is writing
        time.sleep(0.05)
    assert list(out.glob("*.tar.tmp")), "the first build never started writing"

    def keep():
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output
        assert len(samples_of(out)) == 8

    return Run(build_args(images, captions, out), 1,
               rf"error: {out} is being written by another dftrain process \(pid {first.pid} on ", keep=keep)


def build_into_a_folder_dftrain_did_not_make(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    captions = captions_file(tmp, json.dumps({"a": "a cat"}))
    out = tmp / "mine"
    out.mkdir()
    for name in ("notes.tmp", "manifest.json", "shard-000000.tar"):
        (out / name).write_text(f"my own {name}")
    return Run(build_args(images, captions, out), 1, f"error: {out} already holds files that dftrain did not write",
               keep=unchanged(out))


def dead_run_leftovers_are_cleaned(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    captions = captions_file(tmp, json.dumps({"a": "a cat"}))
    out = tmp / "out"
    script = ("import os, sys\nfrom dftrain.outputs import claim_output\n"
              f"with claim_output({str(out)!r}, 'shard build'):\n"
              f"    open({str(out / 'shard-000000.tar.tmp')!r}, 'wb').write(b'half')\n    os._exit(9)\n")
    subprocess.run([sys.executable, "-c", script])

    def keep():
        assert not list(out.glob("*.tmp")) and len(samples_of(out)) == 1

    return Run(build_args(images, captions, out), 0, re.escape("removed 1 temporary file(s) of an interrupted run"), keep=keep)


def caption_of_1_mb(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1), "b.jpg": make_jpeg(2)})
    captions = captions_file(tmp, json.dumps({"a": "a cat", "b": "spam " * 200_000}))

    def keep():
        assert len(samples_of(tmp / "out")) == 1
        check = subprocess.run([sys.executable, "-m", "dftrain", "shard", "validate", str(tmp / "out")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout  # its own validate accepts what it stored

    return Run(build_args(images, captions, tmp / "out"), 0, re.escape("caption too long: 1"), keep=keep)


def duplicate_keys_in_json_captions(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    captions = captions_file(tmp, '{"a": "the first caption", "a": "the second caption"}')

    def keep():
        (sample,) = samples_of(tmp / "out")
        assert sample["json"]["captions"] == ["the first caption", "the second caption"]

    return Run(build_args(images, captions, tmp / "out"), 0, re.escape("1 duplicate(s) merged"), keep=keep)


def duplicate_keys_in_json_captions_strict(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    captions = captions_file(tmp, '{"a": "the first caption", "a": "the second caption"}')
    return Run(build_args(images, captions, tmp / "out", "--strict"), 1,
               "error: strict mode: captions key a: key given twice")


def one_image_under_two_keys(tmp):
    images = image_folder(tmp, {"nested/x.jpg": make_jpeg(1)})
    captions = captions_file(tmp, json.dumps({"nested/x": "a red cup", "x": "a cup on a table"}))

    def keep():
        (sample,) = samples_of(tmp / "out")
        assert sample["json"]["captions"] == ["a red cup", "a cup on a table"]

    return Run(build_args(images, captions, tmp / "out"), 0, "names the same image as key nested/x", keep=keep)


def generation_outside_its_folder(tmp):
    train = tmp / "train"
    write_dataset(train, n=3)
    gens = tmp / "gens"
    gens.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp / "secret.png")
    (gens / "prompts.jsonl").write_text(json.dumps({"file": "../secret.png", "prompt": "x"}) + "\n")
    return Run(["evaluate", "--generations", str(gens), "--train-shards", str(train), "--out", str(tmp / "eval"),
                "--no-cache"], 1, "error: .*prompts.jsonl:1: file '../secret.png' points outside the generations",
               keep=lambda: not (tmp / "eval").exists() or pytest.fail("evaluate wrote a report"))


def generalize_after_input_rebuilt(tmp, lm):
    shards = write_input_shards(tmp / "shards", [["Mount Fuji in Japan, 2019"], ["a dog"]])
    generalize_here(shards, tmp / "out", lm)
    write_input_shards(shards, [["Mount Fuji in Japan, 2020"], ["a dog"]])  # same size, other content

    def keep():
        captions = {s["json"]["orig_caption"] for s in samples_of(tmp / "out")}
        assert captions == {"Mount Fuji in Japan, 2020", "a dog"}

    return Run(generalize_args(shards, tmp / "out", lm), 0, '"written": \\["shard-000000.tar"\\]', keep=keep)


def generalize_after_model_changed(tmp, lm):
    model = tmp / "lm"
    shutil.copytree(lm, model)
    shards = write_input_shards(tmp / "shards", [["a red car"], ["a dog"]])
    generalize_here(shards, tmp / "out", model)
    build_tiny_lm(model, seed=7)  # other weights, same folder
    return Run(generalize_args(shards, tmp / "out", model), 0,
               '"written": \\["shard-000000.tar", "shard-000001.tar"\\]')


# Training options: typed once (dftrain/options.py), refused in one line before any model loads. A model
# folder with the right layout is enough: nothing may get as far as reading it.

def train_args(tmp: Path, shards: Path | None = None, *extra: str) -> list[str]:
    model = tmp / "model"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (model / sub).mkdir(parents=True, exist_ok=True)
    if shards is None:
        shards = crafted(tmp, [], 1)
    return ["train", "--model", str(model), "--shards", str(shards), "--out", str(tmp / "run"), "--fusion", "none",
            *extra]


def yaml_steps_ten_and_lr_as_text_train(tmp):
    config = tmp / "run.yaml"
    config.write_text("lr: 1e-3\nsteps: ten\n")  # YAML 1.1 reads 1e-3 as a string: a number all the same
    return Run(train_args(tmp, None, "--config", str(config)), 1,
               f"error: {re.escape(str(config))}: steps: Input should be a valid integer, unable to parse string as "
               "an integer, got 'ten'$", keep=nothing_made(tmp / "run"))


def nothing_made(folder: Path) -> Callable[[], None]:
    def keep():
        assert not folder.exists(), f"{folder} was made before the options were checked"

    return keep


def w_lat_nan_train(tmp):
    return Run(train_args(tmp, None, "--w-lat", "nan"), 1, "error: --w-lat: Input should be a finite number, got nan",
               keep=nothing_made(tmp / "run"))


def lr_inf_train(tmp):
    return Run(train_args(tmp, None, "--lr", "inf"), 1, "error: --lr: Input should be a finite number, got inf")


def manifest_less_folder_train(tmp):
    (tmp / "shards").mkdir()
    write_raw_tar(tmp / "shards" / "shard-000000.tar", GOOD)  # an interrupted build: tars, no manifest
    return Run(train_args(tmp, tmp / "shards"), 1, "no manifest.json in .*: not a finished shard folder")


# Rows that were bad-input behaviour before issue 14 and must stay so.

def truncated_tar_validate(tmp):
    folder = tmp / "shards"
    write_dataset(folder, n=4, per_shard=4)
    tar = folder / "shard-000000.tar"
    with open(tar, "r+b") as handle:
        handle.truncate(tar.stat().st_size // 2)
    return Run(["shard", "validate", str(folder)], 1, "corrupt tar")


def no_manifest_validate(tmp):
    (tmp / "shards").mkdir()
    write_raw_tar(tmp / "shards" / "shard-000000.tar", GOOD)
    return Run(["shard", "validate", str(tmp / "shards")], 1, "invalid manifest")


def undecodable_and_missing_images_build(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1), "broken.jpg": b"\xff\xd8 not really"})
    captions = captions_file(tmp, json.dumps({"a": "a cat", "broken": "x", "ghost": "y", "blank": " "}))
    return Run(build_args(images, captions, tmp / "out"), 0,
               re.escape("skipped 3 (empty caption: 1, missing image: 1, undecodable image: 1)"))


def non_utf8_and_empty_captions_validate(tmp):
    folder = crafted(tmp, [("000000001.jpg", make_jpeg(1)), ("000000001.txt", b"\xff\xfe bad"),
                           ("000000002.jpg", make_jpeg(2)), ("000000002.txt", b"   ")], 3)
    return Run(["shard", "validate", str(folder)], 1, "sample 000000001: non-utf8 txt")


def missing_captions_file_build(tmp):
    images = image_folder(tmp, {"a.jpg": make_jpeg(1)})
    return Run(build_args(images, tmp / "nope.json", tmp / "out"), 1, "error: captions file not found")


ROWS = [
    member_claiming_50_gib_validate, member_claiming_50_gib_generalize, sparse_2_gib_member_generalize,
    sparse_member_validate, jpeg_claiming_13000_squared_build, jpeg_claiming_13000_squared_validate,
    bomb_training_image_evaluate, unsafe_key_validate, unsafe_keys_generalize_twice, undecodable_object_bank_image,
    readonly_output_folder, full_disk_during_build, second_build_into_the_same_folder,
    build_into_a_folder_dftrain_did_not_make, dead_run_leftovers_are_cleaned, caption_of_1_mb,
    duplicate_keys_in_json_captions, duplicate_keys_in_json_captions_strict, one_image_under_two_keys,
    generation_outside_its_folder, generalize_after_input_rebuilt, generalize_after_model_changed,
    yaml_steps_ten_and_lr_as_text_train, w_lat_nan_train, lr_inf_train, manifest_less_folder_train,
    truncated_tar_validate, no_manifest_validate, undecodable_and_missing_images_build,
    non_utf8_and_empty_captions_validate, missing_captions_file_build,
]


def _run(run: Run, tmp: Path) -> subprocess.CompletedProcess:
    command = run.args if run.args[:1] == ["-c"] else ["-m", "dftrain", *run.args]
    # A parent process with no other children reports the command's peak memory (ru_maxrss, KiB).
    wrapper = ("import resource, subprocess, sys\n"
               "code = subprocess.call(sys.argv[1:])\n"
               "print(f'maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
               "sys.exit(code)\n")
    env = {**os.environ, "DFTRAIN_CACHE": str(tmp / "cache"), **run.env}
    return run_group([sys.executable, "-c", wrapper, *run.prefix, sys.executable, *command],
                     env=env, timeout=300, cwd=tmp)


@pytest.mark.parametrize("row", ROWS, ids=[row.__name__ for row in ROWS])
def test_bad_input(row, tmp_path, request):
    import inspect

    args = [request.getfixturevalue("tiny_lm")] if "lm" in inspect.signature(row).parameters else []
    run = row(tmp_path, *args)
    result = _run(run, tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == run.code, output[-3000:]
    if run.code == 0:
        assert re.search(run.message, output), output[-3000:]
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) <= 1, errors
        where = errors[0] if errors and run.message.startswith("error:") else output
        assert re.search(run.message, where), output[-3000:]
    if run.max_rss_mb is not None:
        peak = int(re.search(r"maxrss_kib=(\d+)", result.stderr).group(1)) // 1024
        assert peak < run.max_rss_mb, f"peak memory {peak} MB"
    if run.keep is not None:
        run.keep()
