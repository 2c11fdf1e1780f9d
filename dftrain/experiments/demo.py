"""`dftrain demo`: the whole method on the embedded default, as one resumable run.

synthetic shards -> tiny model -> generalize captions (embedded LLM) -> score before
and after -> train baseline / generalized captions / dual fusion (DeepSpeed, several
CPU ranks) -> generate from the ORIGINAL captions -> evaluate each -> compare ->
OUT/report.md. Each step is one `dftrain` subcommand (dftrain.experiments.stages), so a re-run
reuses every step that finished.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from dftrain.errors import ConfigError
from dftrain.experiments.stages import Stage
from dftrain.paths import packaged_ds_config


@dataclass(frozen=True)
class DemoSize:
    n_train: int  # training samples, duplicates included
    dup_fraction: float
    size: int  # image side in pixels
    objects_per_class: int
    steps: int  # training steps per variant
    batch_size: int  # per rank
    num_prompts: int
    per_prompt: int
    inference_steps: int
    lr: float = 1e-3
    warmup_steps: int = 20


PROFILES = {
    # ~15 minutes on 2 CPU cores (see README)
    "default": DemoSize(n_train=200, dup_fraction=0.2, size=64, objects_per_class=12, steps=300,
                        batch_size=8, num_prompts=40, per_prompt=2, inference_steps=20),
    # the CI smoke run: every stage and every report section, minimal sizes
    "ci": DemoSize(n_train=16, dup_fraction=0.25, size=64, objects_per_class=2, steps=4,
                   batch_size=2, num_prompts=4, per_prompt=2, inference_steps=2),
}

# variant name -> (caption source, fusion)
VARIANTS = {
    "baseline": ("train", "none"),
    "generalized": ("general", "none"),
    "dual_fusion": ("general", "dual"),
}


def build_stages(out: Path, profile: str = "default", ranks: int = 2, zero_config: str | None = None) -> list[Stage]:
    if profile not in PROFILES:
        raise ConfigError(f"unknown demo profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if ranks < 1:
        raise ConfigError("--ranks must be >= 1")
    s = PROFILES[profile]
    data, model = out / "data", out / "model"
    train, objects, general = data / "train", data / "objects", data / "general"
    zero_config = zero_config or str(packaged_ds_config("zero2"))
    stages = [
        Stage("data", ["shard", "synthetic", "--out", str(data), "--n", str(s.n_train), "--size", str(s.size),
                       "--dup-fraction", str(s.dup_fraction), "--objects-per-class", str(s.objects_per_class),
                       "--seed", "0"],
              [train / "manifest.json", objects / "manifest.json"]),
        Stage("model", ["model", "tiny", "--out", str(model), "--resolution", str(s.size)],
              [model / "model_index.json"]),
        Stage("generalize", ["generalize", "--shards", str(train), "--out", str(general), "--backend", "embedded"],
              [general / "manifest.json"]),
        Stage("score_original", ["score", "--shards", str(train)], [train / "scores.jsonl"]),
        Stage("score_generalized", ["score", "--shards", str(general)], [general / "scores.jsonl"]),
    ]
    caption_dirs = {"train": train, "general": general}
    for name, (captions, fusion) in VARIANTS.items():
        run = out / "runs" / name
        gen = out / "generations" / name
        evaluation = out / "eval" / name
        train_args = ["train", "--model", str(model), "--shards", str(caption_dirs[captions]),
                      "--objects", str(objects), "--fusion", fusion, "--out", str(run),
                      "--overwrite",  # a stage that runs again (interrupted, or its inputs changed) starts over
                      "--steps", str(s.steps), "--micro-batch-size", str(s.batch_size),
                      # the paper's 5e-6 with 5,000 warm-up steps fine-tunes a pretrained SD; the tiny
                      # model starts from random weights and needs a larger rate to learn in minutes
                      "--lr", str(s.lr), "--warmup-steps", str(s.warmup_steps), "--lr-schedule", "constant_with_warmup",
                      "--checkpoint-every", str(s.steps), "--deepspeed", zero_config, "--seed", "0"]
        stages += [
            Stage(f"train_{name}", train_args, [run / "pipeline" / "model_index.json"], ranks=ranks),
            Stage(f"generate_{name}", ["generate", "--model", str(run / "pipeline"), "--shards", str(train),
                                       "--out", str(gen), "--num-prompts", str(s.num_prompts),
                                       "--per-prompt", str(s.per_prompt), "--steps", str(s.inference_steps),
                                       "--seed", "0"],
                  [gen / "prompts.jsonl"]),
            Stage(f"evaluate_{name}", ["evaluate", "--generations", str(gen), "--train-shards", str(train),
                                       "--out", str(evaluation)],
                  [evaluation / "report.json"]),
        ]
    eval_dirs = [str(out / "eval" / name) for name in VARIANTS]
    stages.append(Stage("compare", ["compare", *eval_dirs, "--baseline", eval_dirs[0], "--out", str(out / "compare")],
                        [out / "compare" / "compare.md"]))
    return stages


def _score_summary(path: Path, field: str = "txt") -> dict | None:
    """Mean and median generality of one caption field in a `dftrain score --shards` output."""
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [row["generality"] for row in rows if row.get("field") == field]
    values = [v for v in values if v is not None]
    if not values:
        return None
    values.sort()
    return {"n": len(values), "mean": sum(values) / len(values), "median": values[len(values) // 2]}


def write_report(out: Path) -> Path:
    """Collect the stages' outputs into OUT/report.md (tables, caption examples, pictures)."""
    data = out / "data"
    lines = ["# dftrain demo report", "",
             "The whole method on the embedded default: synthetic LAION-like data, a tiny",
             "Stable-Diffusion-shaped model, SmolLM2-135M for caption generalization, DeepSpeed on",
             "CPU ranks. At this size the figures show that every stage runs and how to read the",
             "report; they are not evidence about Stable Diffusion (see `make reproduce`).", ""]

    lines += ["## Caption generality (0 = specific, 10 = general)", "",
              "| captions | n | mean | median |", "|---|---|---|---|"]
    for label, folder in (("original", data / "train"), ("generalized", data / "general")):
        summary = _score_summary(folder / "scores.jsonl")
        if summary:
            lines.append(f"| {label} | {summary['n']} | {summary['mean']:.2f} | {summary['median']:.2f} |")
        else:
            lines.append(f"| {label} | - | - | - |")
    lines.append("")

    examples = _caption_examples(data / "general")
    if examples:
        lines += ["## Caption examples", "", "| original | generalized | how |", "|---|---|---|"]
        for orig, new, how in examples:
            lines.append(f"| {_cell(orig)} | {_cell(new)} | {how} |")
        lines.append("")

    lines += ["## Replication and quality", ""]
    compare_md = out / "compare" / "compare.md"
    lines += [compare_md.read_text().strip() if compare_md.exists() else "(compare did not run)", ""]

    lines += ["## Pictures", ""]
    pictures = out / "pictures"
    pictures.mkdir(exist_ok=True)
    for name in VARIANTS:
        evaluation = out / "eval" / name
        for png in sorted(evaluation.glob("*.png")):
            target = pictures / f"{name}_{png.name}"
            shutil.copyfile(png, target)
            lines.append(f"### {name}: {png.stem.replace('_', ' ')}\n\n![{name} {png.stem}](pictures/{target.name})\n")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _caption_examples(general_dir: Path, limit: int = 8) -> list[tuple[str, str, str]]:
    from dftrain.shards import iter_samples

    if not (general_dir / "manifest.json").exists():
        return []
    examples, seen = [], set()
    for sample in iter_samples(general_dir, decode=False, require=("txt",)):
        meta = sample.get("json") or {}
        orig = meta.get("orig_caption", "")
        if orig in seen:
            continue
        seen.add(orig)
        examples.append((orig, sample["txt"], meta.get("fallback_step") or "llm"))
        if len(examples) >= limit:
            break
    return examples
