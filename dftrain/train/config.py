"""Training configuration: one typed model (dftrain/options.py), from which the command line's options are
generated, read from YAML and/or flags and checked before any compute.

Precedence: defaults < `--config FILE.yaml` < command-line flags.
YAML keys are the field names below (dashes or underscores); a `train:` section is also accepted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from dftrain.errors import ConfigError
from dftrain.options import (
    Integer,
    Number,
    Options,
    PathList,
    Switch,
    build_options,
    missing_required,
    option,
    read_yaml_mapping,
)
from dftrain.paths import packaged_ds_config
from dftrain.progress import DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP
from dftrain.shards.inputs import SHARDS_HELP
from dftrain.train.duplication import DUP_SAMPLING_MODES
from dftrain.train.fusion import CAPTION_FUSION_MODES, FUSION_MODES
from dftrain.train.object_draws import OBJECT_LABEL_MODES, OBJECT_LATENT_MODES

PRECISIONS = ("bf16", "fp32", "fp16")
LR_SCHEDULES = ("constant_with_warmup", "cosine", "constant")
ATTENTIONS = ("sdpa", "xformers")
CAPTION_FIELDS = ("txt", "orig")
PREDICTION_TYPES = ("epsilon", "v_prediction")
ZERO_STAGES = (0, 1, 2, 3)

Unit = {"ge": 0.0, "le": 1.0}
Positive = {"ge": 1}


class TrainConfig(Options):
    # inputs / outputs
    model: str = option("", "Diffusers pipeline folder (unet, vae, text_encoder, tokenizer, scheduler).",
                        default_text="required")
    shards: PathList = option([], "Training shards (images, or latents from `dftrain precompute`): " + SHARDS_HELP,
                              default_text="required", metavar="DIR|TAR|LIST")
    objects: str | None = option(None, "Object-bank shard folder (needed for any fusion).")
    out: str = option("", "Run folder: checkpoints/, metrics.jsonl, config.yaml, pipeline/.", default_text="required")
    # method
    fusion: Literal[FUSION_MODES] = option("dual", "Fusion of an object-bank image into each example.")
    caption_fusion: Literal[CAPTION_FUSION_MODES] = option("embed_add", "How the object's label joins the caption.")
    w_lat: Number = option(0.1, "Latent fusion weight: z' = (1 - w) z + w z_object.", **Unit)
    w_emb: Number = option(0.5, "Caption embedding fusion weight (embed_add).", **Unit)
    caption_field: Literal[CAPTION_FIELDS] = option(
        "txt", "txt (training caption) or orig (the original caption kept in the json).")
    # the object of each fusion, as the paper draws it (dftrain/train/object_draws.py)
    object_label: Literal[OBJECT_LABEL_MODES] = option(
        "synonym", "synonym: a random synonym of the object's class per draw (the paper's); first: always the class "
        "name.")
    object_flip: Switch = option(True, "Flip object images left-right with p = 1/2, like training images.")
    object_latent: Literal[OBJECT_LATENT_MODES] = option(
        "sample", "sample: VAE posterior mean + std * noise (the paper's); mean: the posterior mean.")
    # prior-study baselines (Somepalli et al. 2023; all off by default, their parameters otherwise)
    embed_noise_sigma: Number = option(0.0, "Baseline: Gaussian noise sigma on caption embeddings (0 = off).", ge=0.0)
    mixup_alpha: Number = option(0.0, "Baseline: embedding mixup, one lambda ~ Beta(alpha, 1) per batch (0 = off).",
                                 ge=0.0)
    mixup_per_sample: Switch = option(False, "Mixup: one lambda per example instead (not theirs).")
    multi_caption: Switch = option(False, "Baseline: one random caption of the json's `captions` per image.")
    caption_replace: Switch = option(False, "Baseline: with probability p the caption becomes random BPE tokens.")
    word_insert: Switch = option(False, "Baseline: with probability p, random BPE tokens inserted at random positions.")
    word_repeat: Switch = option(False, "Baseline: with probability p, words of the caption inserted at random "
                                 "positions.")
    text_mitigation_p: Number = option(0.1, "Probability p of each text baseline per sample (theirs).", **Unit)
    caption_replace_tokens: Integer = option(4, "Tokens of a replaced caption.", **Positive)
    word_insert_tokens: Integer = option(2, "Random tokens inserted.", **Positive)
    word_repeat_words: Integer = option(2, "Words repeated.", **Positive)
    # data
    resolution: Integer | None = option(None, "Image size, a multiple of 8.", default_text="UNet sample_size x VAE "
                                        "factor", ge=8, multiple_of=8)
    random_flip: Switch = option(True, "Random horizontal flip.")
    shuffle_buffer: Integer = option(256, "Shuffle buffer (examples).", ge=0)
    dup_sampling: Literal[DUP_SAMPLING_MODES] = option(
        "none", "Baseline: dup_both (a fraction of samples drawn with more weight) or dup_image (the same, each "
        "time with a random caption of theirs).")
    dup_fraction: Number = option(0.05, "Fraction of samples drawn with more weight (theirs).", **Unit)
    dup_weight: Integer = option(5, "Their weight: occurrences per epoch (theirs).", **Positive)
    num_workers: Integer | None = option(
        None, "Image-decoding processes per rank; 0 decodes in the training process.",
        default_text="on GPUs min(4, cores per rank - 1); 0 on CPU-only hosts", ge=0)
    object_cache_mb: Integer = option(2048, "Object-bank latents kept in RAM up to this many MiB, beyond it "
                                      "memory-mapped from RUN/.object-latents.", ge=0)
    # optimisation
    steps: Integer = option(1000, "Optimizer steps.", **Positive)
    micro_batch_size: Integer = option(4, "Examples per rank per micro-step.", **Positive)
    grad_accum: Integer = option(1, "Gradient accumulation steps.", **Positive)
    lr: Number = option(5e-6, "Peak learning rate (the paper's default).", gt=0.0)
    lr_schedule: Literal[LR_SCHEDULES] = option("constant_with_warmup", "Learning-rate schedule.")
    warmup_steps: Integer = option(5000, "Warm-up steps (the paper's default).", ge=0)
    weight_decay: Number = option(1e-2, "AdamW weight decay.", ge=0.0)
    adam_beta1: Number = option(0.9, "AdamW beta1.", ge=0.0, lt=1.0)
    adam_beta2: Number = option(0.999, "AdamW beta2.", ge=0.0, lt=1.0)
    adam_eps: Number = option(1e-8, "AdamW epsilon.", gt=0.0)
    grad_clip: Number = option(1.0, "Gradient clipping norm (DeepSpeed config).", ge=0.0)
    precision: Literal[PRECISIONS] = option("bf16", "Training precision; fp16 on GPUs only.")
    prediction_type: Literal[PREDICTION_TYPES] | None = option(None, "What the UNet predicts.",
                                                               default_text="the scheduler config's")
    # engine
    deepspeed: str | None = option(None, "DeepSpeed JSON file, or a packaged one by name (zero1 | zero2 | zero3 | "
                                   "zero2_offload); batch and clipping are filled in.")
    zero_stage: Literal[ZERO_STAGES] | None = option(None, "ZeRO stage, overriding the DeepSpeed file's.",
                                                     default_text="2 without a file")
    gradient_checkpointing: Switch = option(False, "Recompute UNet activations in the backward pass (less memory, "
                                            "about a third more compute).")
    attention: Literal[ATTENTIONS] = option("sdpa", "Attention kernels; xformers needs CUDA.")
    ema: Switch = option(False, "Keep an EMA of the UNet (exported instead of the raw weights).")
    ema_decay: Number = option(0.9999, "EMA decay.", **Unit)
    seed: Integer = option(0, "Seed (each rank adds its rank).")
    # checkpoints and logs
    checkpoint_every: Integer = option(500, "Checkpoint every K steps.", **Positive)
    keep_checkpoints: Integer = option(2, "Complete checkpoints kept.", **Positive)
    resume: str | None = option(None, "auto (latest complete checkpoint of --out) or a checkpoint folder.")
    overwrite: Switch = option(False, "Start over in a run folder that holds another run (its checkpoints are "
                               "removed).")
    allow_changes: Switch = option(False, "Resume although options that change training (lr, batch, data, fusion) "
                                   "differ from the checkpoint's.")
    export: Switch = option(True, "Export RUN/pipeline at the end.")
    log_every: Integer = option(10, "Metrics line every N steps.", **Positive)
    tensorboard: Switch = option(False, "Also write TensorBoard events.")
    progress: Switch = option(True, "Progress on rank 0: a bar on a terminal, else a line every --log-interval.")
    log_interval: Number = option(DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP, gt=0.0)
    extra: dict = option({}, "Free-form notes kept in the run's config.yaml.", cli=False)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    data = read_yaml_mapping(path, kind="config file", holds="options")
    if isinstance(data.get("train"), dict):  # allow a `train:` section
        data = data["train"]
    return data


def build_config(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < YAML file < overrides (None values in overrides mean "not given"). Types, ranges and
    choices are checked here, against the file or the flags they came from."""
    layers = [(str(config_file), load_yaml(config_file))] if config_file else []
    layers.append(("flags", {k: v for k, v in (overrides or {}).items() if v is not None}))
    return build_options(TrainConfig, layers)


def load_shard_manifest(shard_dir: Path, problems: list[str]):
    """The folder's Manifest, or None with the reason added to `problems` (no or a bad manifest: an
    interrupted build's tars are not data)."""
    from dftrain.shards import Manifest, ShardError

    try:
        return Manifest.load(shard_dir)
    except ShardError as exc:
        problems.append(str(exc))
        return None


def ds_config_path(value: str) -> Path:
    """--deepspeed as given: a file, or the name of a packaged config (`zero2`)."""
    path = Path(value)
    if not path.exists() and path.name == value and packaged_ds_config(value).is_file():
        return packaged_ds_config(value)
    return path


def load_ds_config(cfg: TrainConfig) -> dict[str, Any]:
    """The user's DeepSpeed JSON (or a minimal one), before the trainer fills in batch sizes."""
    if cfg.deepspeed:
        path = ds_config_path(cfg.deepspeed)
        if not path.is_file():
            raise ConfigError(f"DeepSpeed config not found: {path}")
        try:
            ds = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(ds, dict):
            raise ConfigError(f"{path}: expected a JSON object")
    else:
        ds = {"zero_optimization": {"stage": 2}}
    ds.setdefault("zero_optimization", {})
    if cfg.zero_stage is not None:
        ds["zero_optimization"]["stage"] = cfg.zero_stage
    return ds


def zero_stage_of(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate(cfg: TrainConfig) -> dict[str, Any]:
    """Check what the option types cannot (files, options that need or exclude each other), before any
    compute; raise ConfigError listing all problems. Returns facts found on the way (data kinds, ZeRO stage,
    DeepSpeed config, whether the data is precomputed)."""
    problems: list[str] = []
    facts: dict[str, Any] = {}
    problems += missing_required(cfg)
    if cfg.model:
        _check_model_folder(Path(cfg.model), problems)
    train_extra = _check_training_shards(cfg, problems, facts) if cfg.shards else {}
    if cfg.fusion != "none":
        _check_object_bank(cfg, problems, facts)
    _check_machine(cfg, problems, facts)
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).exists():
        problems.append(f"--resume: checkpoint not found: {cfg.resume} (or pass --resume auto)")
    _check_precomputed(cfg, train_extra, problems, facts)
    if problems:
        raise ConfigError("invalid training configuration:\n  - " + "\n  - ".join(problems))
    return facts


def _check_model_folder(model: Path, problems: list[str]) -> None:
    if not model.is_dir():
        problems.append(f"model folder not found: {model}")
        return
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (model / sub).is_dir():
            problems.append(f"model folder {model} has no {sub}/ (expected a diffusers pipeline folder)")


def _check_training_shards(cfg: TrainConfig, problems: list[str], facts: dict[str, Any]) -> dict[str, Any]:
    """The training shard set (facts["train_kind"]); returns its manifests' extra settings."""
    from dftrain.shards import ShardError
    from dftrain.shards.inputs import shard_set

    try:  # folders without a manifest, bad list lines, repeats and mixed kinds are refused here
        train_set = shard_set(cfg.shards)
    except ShardError as exc:
        problems.append(str(exc))
        return {}
    facts["train_kind"] = train_set.kind
    settings = ("resolution", "scaling_factor", "flip", "text_states", "caption_field")
    if train_set.kind == "latents" and len({json.dumps([m.extra.get(k) for k in settings])
                                            for m in train_set.manifests}) > 1:
        problems.append("the latent shard folders were precomputed with different settings "
                        f"({', '.join(settings)}): precompute them alike")
    return train_set.extra


def _check_object_bank(cfg: TrainConfig, problems: list[str], facts: dict[str, Any]) -> None:
    """Any fusion needs an object bank (facts["objects_kind"]); sampled object latents need its std."""
    if not cfg.objects:
        problems.append(f"--fusion {cfg.fusion} needs an object bank: pass --objects DIR (or --fusion none)")
    elif not Path(cfg.objects).is_dir():
        problems.append(f"object-bank folder not found: {cfg.objects}")
    elif (manifest := load_shard_manifest(Path(cfg.objects), problems)) is not None:
        facts["objects_kind"] = manifest.kind
        if (manifest.kind == "latents" and cfg.fusion in ("latent", "dual") and cfg.object_latent == "sample"
                and not manifest.extra.get("posterior_std")):
            problems.append(f"{cfg.objects} holds object latents precomputed without the posterior std: run "
                            "`dftrain precompute --objects` again, or pass --object-latent mean")


def _check_machine(cfg: TrainConfig, problems: list[str], facts: dict[str, Any]) -> None:
    """What this machine and its packages allow: precision, attention, the DeepSpeed config, TensorBoard."""
    if cfg.precision == "fp16" and not cuda_available():
        problems.append("--precision fp16 is not supported on CPU (DeepSpeed refuses it): use bf16 or fp32")
    if cfg.attention == "xformers" and not cuda_available():
        problems.append("--attention xformers needs a CUDA GPU (xformers has no CPU kernels): use sdpa")
    try:
        ds = load_ds_config(cfg)
        stage = zero_stage_of(ds)
        if stage not in ZERO_STAGES:
            problems.append(f"unknown ZeRO stage {stage}: DeepSpeed knows stages 0, 1, 2, 3")
        facts["ds_config"], facts["zero_stage"] = ds, stage
    except (ConfigError, ValueError, TypeError) as exc:
        problems.append(str(exc))
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            problems.append("--tensorboard needs the tensorboard package (pip install tensorboard), or drop the flag")


def _check_precomputed(cfg: TrainConfig, train_extra: dict[str, Any], problems: list[str],
                       facts: dict[str, Any]) -> None:
    """Precomputed latents: both sets must be latents, and text-level options need the text encoder."""
    train_latents = facts.get("train_kind") == "latents"
    facts["precomputed"] = train_latents
    # latents folders from before --text-states always held text states
    facts["stored_text"] = train_latents and bool(train_extra.get("text_states", True))
    if cfg.fusion != "none" and "objects_kind" in facts and (facts["objects_kind"] == "latents") != train_latents:
        problems.append(
            "training shards and object bank must both be precomputed latents or both images "
            f"(got {facts.get('train_kind')!r} and {facts['objects_kind']!r}); run `dftrain precompute --objects`"
        )
    if not facts["stored_text"]:
        return
    text_level = {
        "--caption-fusion tail_add": cfg.fusion in ("caption", "dual") and cfg.caption_fusion == "tail_add",
        "--multi-caption": cfg.multi_caption,
        "--dup-sampling dup_image": cfg.dup_sampling == "dup_image",
        "--caption-replace": cfg.caption_replace,
        "--word-insert": cfg.word_insert,
        "--word-repeat": cfg.word_repeat,
    }
    bad = [name for name, on in text_level.items() if on]
    if bad:
        problems.append(
            f"{', '.join(bad)} change caption text, but {', '.join(cfg.shards)} holds precomputed text states: "
            "precompute without --text-states (or train from image shards) for these options"
        )


def summary_lines(cfg: TrainConfig, facts: dict[str, Any], world_size: int) -> list[str]:
    """The start-up summary of the resolved configuration."""
    global_batch = cfg.micro_batch_size * cfg.grad_accum * world_size
    lines = [f"{name:24s} {value}" for name, value in cfg.to_dict().items() if name != "extra"]
    lines += [
        f"{'world_size':24s} {world_size}",
        f"{'global_batch':24s} {global_batch} (= {cfg.micro_batch_size} x {cfg.grad_accum} accum x {world_size} ranks)",
        f"{'zero_stage':24s} {facts.get('zero_stage')}",
        f"{'data':24s} {'precomputed latents' if facts.get('precomputed') else 'images (VAE + text encoder in the step)'}",
    ]
    return lines
