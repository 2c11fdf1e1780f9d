"""`dftrain generate`: images from a pipeline folder, prompted with the ORIGINAL training captions.

    dftrain generate --model MODEL --shards TRAIN --out GEN [--num-prompts N] [--per-prompt K]

The plan (which caption, which seed, which file) is a pure function of the arguments, so the
work splits across ranks without talking (prompt i goes to rank i % world) and a rerun resumes:
an image file that exists is finished (files are written to a temporary name and renamed).
Each rank logs its images to prompts.rank<R>.jsonl; at the end the lines of every finished
image are merged into GEN/prompts.jsonl (one object per image: file, prompt, train_key, seed).
Rerunning with the same arguments generates nothing and merges again.

Inference-time mitigations of the prior study (off by default; their parameters otherwise, see
inference_mitigations.py): `prompt_noise` adds Gaussian noise to the prompt embeddings,
`prompt_augment` inserts random numbers, random tokens or the prompt's own words; the record keeps
the training caption as `prompt` and the text the pipeline saw as `prompt_used`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dftrain.dtypes import torch_dtype
from dftrain.errors import ConfigError, DftrainError, MissingDependencyError
from dftrain.evaluate import inference_mitigations
from dftrain.evaluate.inputs import PROMPTS_FILE, iter_train_samples, original_caption
from dftrain.outputs import check_output_folder, claim_output
from dftrain.progress import progress

log = logging.getLogger("dftrain.generate")

CONFIG_FILE = "generate.json"
SEED_STRIDE = 1_000_003  # keeps the per-image seeds of different --seed values apart


@dataclass
class GenerateOptions:
    num_prompts: int | None = None  # None: every training caption
    per_prompt: int = 1
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    resolution: int | None = None  # None: the resolution it was trained at (see trained_resolution)
    batch_size: int = 4
    device: str | None = None  # None: cuda when available
    dtype: str = "auto"  # auto | fp32 | fp16 | bf16
    rank: int | None = None
    world_size: int | None = None
    overwrite: bool = False  # write into a folder dftrain did not make (dftrain/outputs.py)
    # inference-time mitigations of the prior study (Somepalli et al. 2023)
    prompt_noise: bool = False  # Gaussian noise on the prompt (and negative prompt) embeddings
    prompt_noise_sigma: float = inference_mitigations.PROMPT_NOISE_SIGMA
    prompt_augment: str | None = None  # rand_numb_add | rand_word_add | rand_word_repeat
    prompt_augment_repeats: int = inference_mitigations.AUGMENT_REPEATS

    def mitigation_settings(self) -> dict:
        """The mitigation options in force (empty when none: folders made before them still resume)."""
        out = {}
        if self.prompt_noise:
            out["prompt_noise_sigma"] = self.prompt_noise_sigma
        if self.prompt_augment:
            out.update(prompt_augment=self.prompt_augment, prompt_augment_repeats=self.prompt_augment_repeats)
        return out


@dataclass(frozen=True)
class Job:
    prompt_index: int
    k: int
    file: str
    prompt: str
    train_key: str | None
    seed: int
    prompt_used: str | None = None  # the augmented prompt the pipeline saw (None: `prompt` itself)

    @property
    def text(self) -> str:
        return self.prompt if self.prompt_used is None else self.prompt_used

    def record(self) -> dict:
        row = {"file": self.file, "prompt": self.prompt, "train_key": self.train_key, "seed": self.seed}
        if self.prompt_used is not None:
            row["prompt_used"] = self.prompt_used
        return row


def training_prompts(shards_dir: str | Path, num_prompts: int | None, seed: int) -> list[tuple[str, str]]:
    """(train key, original caption) of a seeded sample of the training set (all when num_prompts is None)."""
    from dftrain.shards import SkipStats

    stats = SkipStats()
    pairs, missing = [], []
    for sample in iter_train_samples(shards_dir, require=(), stats=stats):
        caption = original_caption(sample)
        if caption is None:
            missing.append(sample["__key__"])
            continue
        pairs.append((sample["__key__"], caption))
    if missing:
        log.warning("%d training samples have no caption and give no prompt (first: %s)", len(missing), missing[:5])
    if stats.total_skipped:
        log.warning("training shards: %s", stats.summary())
    if not pairs:
        raise DftrainError(f"no training captions found in {shards_dir}")
    if num_prompts is not None:
        if num_prompts < 1:
            raise ConfigError(f"--num-prompts must be >= 1, got {num_prompts}")
        if num_prompts < len(pairs):
            chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=num_prompts, replace=False))
            pairs = [pairs[i] for i in chosen]
    return pairs


def plan_jobs(prompts: list[tuple[str, str]], per_prompt: int, seed: int, augment=None) -> list[Job]:
    """One job per (prompt, k): file name and per-image seed depend only on the arguments.

    `augment(prompt, image_seed) -> text` (a prompt augmentation) gives each image its own prompt text.
    """
    if per_prompt < 1:
        raise ConfigError(f"--per-prompt must be >= 1, got {per_prompt}")
    jobs = []
    for i, (key, caption) in enumerate(prompts):
        for k in range(per_prompt):
            image_seed = seed * SEED_STRIDE + i * per_prompt + k
            used = augment(caption, image_seed) if augment else None
            jobs.append(Job(i, k, f"{i:06d}_{k:03d}.png", caption, key, image_seed, used))
    return jobs


def prompt_augmenter(model_dir: str | Path, options: GenerateOptions):
    """(prompt, image seed) -> augmented prompt for --prompt-augment, or None when it is off."""
    style = options.prompt_augment
    inference_mitigations.check_augmentation(style, options.prompt_augment_repeats)
    if style is None:
        return None
    id_limit = decode = None
    if style == "rand_word_add":
        from transformers import CLIPTokenizer

        from dftrain.train.mitigations import token_decoder, token_id_limit

        if not (Path(model_dir) / "tokenizer").is_dir():
            raise MissingDependencyError(f"{model_dir} has no tokenizer/ (expected a diffusers pipeline folder)")
        tokenizer = CLIPTokenizer.from_pretrained(Path(model_dir) / "tokenizer", local_files_only=True)
        id_limit, decode = token_id_limit(tokenizer), token_decoder(tokenizer)
    return lambda prompt, seed: inference_mitigations.augment_prompt(
        prompt, style, options.prompt_augment_repeats, seed, id_limit=id_limit, decode=decode)


def conditioning(pipe, batch: list[Job], options: GenerateOptions) -> dict:
    """The pipeline's text arguments for a batch: the prompts, or their (noised) embeddings."""
    prompts = [j.text for j in batch]
    if not options.prompt_noise:
        return {"prompt": prompts}
    do_cfg = options.guidance > 1.0
    cond, uncond = pipe.encode_prompt(prompts, pipe.device, 1, do_cfg)
    generators = inference_mitigations.noise_generators([j.seed for j in batch])
    sigma = options.prompt_noise_sigma
    args = {"prompt_embeds": inference_mitigations.noisy_embeddings(cond, sigma, generators)}
    if do_cfg:  # theirs noised the prompt and the negative prompt embeddings together
        args["negative_prompt_embeds"] = inference_mitigations.noisy_embeddings(uncond, sigma, generators)
    return args


def jobs_for_rank(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """Prompt i goes to rank i % world_size (all images of one prompt stay on one rank)."""
    return [j for j in jobs if j.prompt_index % world_size == rank]


def rank_file(out_dir: Path, rank: int) -> Path:
    return out_dir / f"prompts.rank{rank:05d}.jsonl"


def _check_config(out_dir: Path, config: dict, rank: int) -> None:
    """The folder must hold one plan only: refuse to resume with different arguments, another model
    or other training captions (compared by content; "paths" is for the reader only)."""
    path = out_dir / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), config.get(k)) for k in {**old, **config}
                if k != "paths" and old.get(k) != config.get(k)}
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ConfigError(f"{out_dir} holds generations made with other settings ({shown}); "
                              "use another --out or the same arguments to resume")
        return
    tmp = path.with_name(f"{path.name}.tmp{rank}-{os.getpid()}")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def merge_prompt_files(out_dir: Path, jobs: list[Job]) -> int:
    """Write prompts.jsonl: one line per finished image, in plan order. Returns the number of lines.

    Lines come from the per-rank files; an image whose line was lost (a crash between the rename
    and the append) gets its line from the plan, which is what the rank would have written.
    """
    logged: dict[str, dict] = {}
    for path in sorted(out_dir.glob("prompts.rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                logged[row["file"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash; its image gets the plan's line
    rows = [logged.get(j.file, j.record()) for j in jobs if (out_dir / j.file).is_file()]
    tmp = out_dir / f"{PROMPTS_FILE}.tmp{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out_dir / PROMPTS_FILE)
    return len(rows)


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return torch_dtype(name)


def load_pipeline(model_dir: str | Path, device: str, dtype: str):
    from diffusers import StableDiffusionPipeline

    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise MissingDependencyError(f"{model_dir} is not a diffusers pipeline folder (no model_index.json)")
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, torch_dtype=_torch_dtype(dtype, device), safety_checker=None, requires_safety_checker=False,
        local_files_only=True)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def trained_resolution(model_dir: str | Path) -> int | None:
    """The resolution a `dftrain export`ed pipeline was trained at (None for other folders)."""
    from dftrain.train.export import EXPORT_INFO

    path = Path(model_dir) / EXPORT_INFO
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("resolution")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int | float) and value > 0 else None


def _save_atomic(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def generate(model_dir: str | Path, shards_dir: str | Path, out_dir: str | Path,
             options: GenerateOptions | None = None) -> dict:

    from dftrain.distributed import rank_info

    options = options or GenerateOptions()
    if options.batch_size < 1 or options.steps < 1:
        raise ConfigError("--batch-size and --steps must be >= 1")
    if options.prompt_noise and options.prompt_noise_sigma < 0:
        raise ConfigError(f"--prompt-noise-sigma must be >= 0, got {options.prompt_noise_sigma}")
    info = rank_info(options.rank, options.world_size)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, "generate", overwrite=options.overwrite)  # before reading any caption
    augment = prompt_augmenter(model_dir, options)
    jobs = plan_jobs(training_prompts(shards_dir, options.num_prompts, options.seed), options.per_prompt,
                     options.seed, augment)
    mine = jobs_for_rank(jobs, info.rank, info.world_size)
    my_files = {j.file for j in mine}

    def my_temp_files(folder: Path):
        # `.<file>.tmp<pid>` of this rank's images; other ranks may be writing theirs right now.
        images = [p for p in folder.glob(".*.tmp*") if p.name[1:].split(".tmp")[0] in my_files]
        return images + list(folder.glob(f"{CONFIG_FILE}.tmp{info.rank}-*"))

    with claim_output(out_dir, "generate", overwrite=options.overwrite, scope=f"rank{info.rank}",
                      temp_patterns=my_temp_files):
        return _generate_claimed(model_dir, shards_dir, out_dir, options, info, jobs, mine)


def _generate_claimed(model_dir, shards_dir, out_dir: Path, options: GenerateOptions, info, jobs: list[Job],
                      mine: list[Job]) -> dict:
    import torch

    from dftrain.fingerprint import tree_sha256
    from dftrain.shards.inputs import shard_set

    if not (Path(model_dir) / "model_index.json").is_file():
        raise MissingDependencyError(f"{model_dir} is not a diffusers pipeline folder (no model_index.json)")
    # Reuse is keyed on content: images of a retrained model in the same folder are not "done".
    inputs = shard_set(shards_dir)
    config = {"model": tree_sha256(model_dir), "shards": inputs.sha256(),
              **{k: v for k, v in asdict(options).items()
                 if k in ("num_prompts", "per_prompt", "steps", "guidance", "seed", "resolution")},
              **options.mitigation_settings(),
              "paths": {"model": str(Path(model_dir).resolve()),
                        "shards": [str(f.resolve()) for f in inputs.folders]}}
    _check_config(out_dir, config, info.rank)
    todo = [j for j in mine if not (out_dir / j.file).is_file()]
    summary = {"planned": len(jobs), "rank": info.rank, "world_size": info.world_size, "this_rank": len(mine),
               "already_done": len(mine) - len(todo), "generated": 0}
    if todo:
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = load_pipeline(model_dir, device, options.dtype)
        size = (options.resolution or trained_resolution(model_dir)
                or pipe.unet.config.sample_size * pipe.vae_scale_factor)
        log.info("rank %d/%d: %d images to generate (%d already there), %dx%d, %d steps, guidance %g on %s",
                 info.rank, info.world_size, len(todo), summary["already_done"], size, size, options.steps,
                 options.guidance, device)
        with rank_file(out_dir, info.rank).open("a", encoding="utf-8") as log_file, \
                progress("generate", len(todo), unit="images", enabled=info.is_main) as shown:
            for b in range(0, len(todo), options.batch_size):
                batch = todo[b:b + options.batch_size]
                # One CPU generator per image: an image depends on its own seed only, not on the batch.
                generators = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
                images = pipe(**conditioning(pipe, batch, options), num_inference_steps=options.steps,
                              guidance_scale=options.guidance, height=size, width=size, generator=generators,
                              output_type="pil").images
                for job, image in zip(batch, images, strict=True):
                    _save_atomic(image, out_dir / job.file)
                    log_file.write(json.dumps(job.record(), ensure_ascii=False) + "\n")
                log_file.flush()
                os.fsync(log_file.fileno())
                summary["generated"] += len(batch)
                shown.advance(len(batch))
    summary["merged"] = merge_prompt_files(out_dir, jobs)
    summary["complete"] = summary["merged"] == len(jobs)
    return summary
