"""The README's LAION path, run as written: an img2dataset folder adopted, generalized, precomputed,
trained on, generated from and evaluated, at toy size with the embedded defaults (about a minute)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from shards_helpers import img2dataset_folder, make_jpeg

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- laion-path:"


def readme_commands() -> str:
    """The bash block right after the README's laion-path marker."""
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, "the README lost its LAION path section"
    found = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert found, "no bash block after the laion-path marker"
    return found.group(1)


def tiny_imagenet(root: Path) -> Path:
    """Tiny-ImageNet's layout: words.txt and train/<wnid>/images/*.JPEG (two classes, two images each)."""
    (root / "words.txt").parent.mkdir(parents=True)
    (root / "words.txt").write_text("n0001\tcat, house cat\nn0002\tdog\n")
    for c, wnid in enumerate(("n0001", "n0002")):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(2):
            (images / f"{wnid}_{i}.JPEG").write_bytes(make_jpeg(500 + 10 * c + i))
    return root


def test_readme_block_is_what_the_test_runs():
    commands = readme_commands()
    lines = [line for line in commands.splitlines() if line.strip()]
    stages = [line.split()[1] for line in lines if line.startswith("dftrain ")]
    assert stages == ["shard", "shard", "shard", "model", "generalize", "precompute", "train", "generate",
                      "evaluate"]


@pytest.mark.slow
def test_the_readme_laion_path_runs_as_written(tmp_path):
    img2dataset_folder(tmp_path / "laion", shards=2, per_shard=4)
    tiny_imagenet(tmp_path / "tiny-imagenet-200")
    script = tmp_path / "laion_path.sh"
    script.write_text("set -euo pipefail\n" + readme_commands())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "8/8 samples usable" in result.stdout and "2 failed downloads" in result.stdout

    from dftrain.shards import Manifest, iter_samples

    general = list(iter_samples(tmp_path / "laion-general", rank=0, world_size=1, decode=False))
    assert len(general) == 8 and all(s["json"]["orig_caption"].startswith("photo ") for s in general)
    assert all(s["json"]["url"].startswith("https://") for s in general)  # img2dataset's fields travel on
    assert Manifest.load(tmp_path / "latents").kind == "latents"
    assert (tmp_path / "runs" / "dual" / "pipeline" / "model_index.json").is_file()
    report = json.loads((tmp_path / "evals" / "dual" / "report.json").read_text())
    assert report["n_train"] == 8 and report["n_generations"] == 4 and report["sim_mean"] is not None
    prompts = [json.loads(line) for line in (tmp_path / "gens" / "dual" / "prompts.jsonl").read_text().splitlines()]
    assert all(p["prompt"].startswith("photo ") and p["train_key"] for p in prompts)  # the ORIGINAL captions
