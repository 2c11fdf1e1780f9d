"""Training configuration: one dataclass, loaded from YAML and/or flags, validated before any compute.

Precedence: dataclass defaults < `--config FILE.yaml` < command-line flags.
YAML keys are the field names below (dashes or underscores).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError
from dftrain.train.fusion import CAPTION_FUSION_MODES, FUSION_MODES

PRECISIONS = ("bf16", "fp32", "fp16")
LR_SCHEDULES = ("constant_with_warmup", "cosine", "constant")
ATTENTIONS = ("sdpa", "xformers")
CAPTION_FIELDS = ("txt", "orig")
PREDICTION_TYPES = ("epsilon", "v_prediction")
ZERO_STAGES = (0, 1, 2, 3)


@dataclass
class TrainConfig:
    # inputs / outputs
    model: str = ""  # diffusers pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)
    shards: str = ""  # training shards (images or precomputed latents)
    objects: str | None = None  # object-bank shards (images or precomputed latents)
    out: str = ""  # run folder: checkpoints/, metrics.jsonl, config.yaml, export/
    # method
    fusion: str = "dual"
    caption_fusion: str = "embed_add"
    w_lat: float = 0.1
    w_emb: float = 0.5
    caption_field: str = "txt"  # txt = training caption; orig = json "caption"/"orig_caption"
    # the object of each fusion, as the paper draws it (dftrain/train/object_draws.py)
    object_label: str = "synonym"  # synonym: a random synonym of the class per draw | first: always its name
    object_flip: bool = True  # object images flipped left-right with p = 1/2, like training images
    object_latent: str = "sample"  # sample: VAE posterior mean + std * noise | mean
    # prior-study baselines (Somepalli et al. 2023; all off by default, their parameters otherwise)
    embed_noise_sigma: float = 0.0  # their rand_noise_lam: c + sigma * N(0, I)
    mixup_alpha: float = 0.0  # > 0 turns embedding mixup on, lambda ~ Beta(alpha, 1), one per batch
    mixup_per_sample: bool = False  # one lambda per example instead (not theirs)
    multi_caption: bool = False  # one random caption of json "captions" per image (their allcaps)
    caption_replace: bool = False  # their randrepl: the caption -> N random BPE tokens
    word_insert: bool = False  # their randwordadd: N random BPE tokens at random positions
    word_repeat: bool = False  # their wordrepeat: N of the caption's words at random positions
    text_mitigation_p: float = 0.1  # their trainspecial_prob: each text mitigation fires per sample with p
    caption_replace_tokens: int = 4
    word_insert_tokens: int = 2
    word_repeat_words: int = 2
    # data
    resolution: int | None = None  # default: unet sample_size * vae scale factor
    random_flip: bool = True
    shuffle_buffer: int = 256
    dup_sampling: str = "none"  # none | dup_both | dup_image (the prior study's duplication sampling)
    dup_fraction: float = 0.05  # fraction of samples drawn with more weight
    dup_weight: int = 5  # their weight: occurrences per epoch
    num_workers: int | None = None  # image-decoding processes per rank; None: from the cores (0 on CPU-only hosts)
    object_cache_mb: int = 2048  # encode the whole object bank once when its latents fit (on-the-fly mode)
    # optimisation
    steps: int = 1000
    micro_batch_size: int = 4  # per rank
    grad_accum: int = 1
    lr: float = 5e-6
    lr_schedule: str = "constant_with_warmup"
    warmup_steps: int = 5000
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "bf16"
    prediction_type: str | None = None  # None: the scheduler config's
    # engine
    deepspeed: str | None = None  # a ds_configs/*.json; batch size, accumulation and clipping are filled in
    zero_stage: int | None = None  # overrides the file's stage; default 2 without a file
    gradient_checkpointing: bool = False
    attention: str = "sdpa"
    ema: bool = False
    ema_decay: float = 0.9999
    seed: int = 0
    # checkpoints and logs
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: str | None = None  # "auto" or a checkpoint folder
    overwrite: bool = False  # start over in a run folder that holds another run
    allow_changes: bool = False  # resume although options that change training differ from the checkpoint's
    export: bool = True
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes kept in the run's config.yaml

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = {f.name for f in dataclasses.fields(TrainConfig)}


def _normalise_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(f"{source}: unknown option {key!r}")
        out[name] = value
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options")
    if isinstance(data.get("train"), dict):  # allow a `train:` section
        data = data["train"]
    return _normalise_keys(data, str(path))


def _coerce(name: str, value: Any, kind: type) -> Any:
    """A YAML value as the option's type. YAML 1.1 reads `1e-3` (no dot) as a string: numbers written
    as text are accepted; anything else is a one-line problem, not a TypeError later."""
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
    raise ValueError(f"{name}: expected {words.get(kind, kind.__name__)}, got {value!r}")


def _field_types() -> dict[str, type]:
    """Option name -> its plain type (int, float, bool, str, dict), `X | None` read as X."""
    import typing

    hints = typing.get_type_hints(TrainConfig)
    types = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        plain = typing.get_origin(args[0]) or args[0]
        if plain in (int, float, bool, str, dict):
            types[name] = plain
    return types


def coerce_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    types, problems, out = _field_types(), [], {}
    for name, value in values.items():
        try:
            out[name] = _coerce(name, value, types[name]) if name in types else value
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return out


def build_config(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < YAML file < overrides (None values in overrides mean "not given")."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(coerce_values(load_yaml(config_file), str(config_file)))
    values.update({k: v for k, v in _normalise_keys(overrides or {}, "flags").items() if v is not None})
    try:
        return TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def load_shard_manifest(shard_dir: Path, problems: list[str]):
    """The folder's Manifest, or None with the reason added to `problems` (no or a bad manifest: an
    interrupted build's tars are not data)."""
    from dftrain.shards import Manifest, ShardError

    try:
        return Manifest.load(shard_dir)
    except ShardError as exc:
        problems.append(str(exc))
        return None


def load_ds_config(cfg: TrainConfig) -> dict[str, Any]:
    """The user's DeepSpeed JSON (or a minimal one), before the trainer fills in batch sizes."""
    if cfg.deepspeed:
        path = Path(cfg.deepspeed)
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


def _check_range(problems: list[str], name: str, value: float, lo: float, hi: float | None) -> None:
    if value is None or value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        problems.append(f"--{name.replace('_', '-')} must be {bound}, got {value}")


def validate(cfg: TrainConfig) -> dict[str, Any]:
    """Check every option before any compute; raise ConfigError listing all problems.

    Returns facts found on the way (data kinds, ZeRO stage, DeepSpeed config).
    """
    problems: list[str] = []
    facts: dict[str, Any] = {}
    train_extra: dict[str, Any] = {}

    import math

    for name, value in sorted(cfg.to_dict().items()):  # NaN passes every range check: refuse it first
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name in ("model", "shards", "out"):
        if not getattr(cfg, name):
            problems.append(f"--{name} is required")
    if cfg.model:
        model = Path(cfg.model)
        if not model.is_dir():
            problems.append(f"model folder not found: {model}")
        else:
            for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
                if not (model / sub).is_dir():
                    problems.append(f"model folder {model} has no {sub}/ (expected a diffusers pipeline folder)")
    if cfg.shards:
        shards = Path(cfg.shards)
        if not shards.is_dir():
            problems.append(f"shard folder not found: {shards}")
        elif (manifest := load_shard_manifest(shards, problems)) is not None:
            facts["train_kind"] = manifest.kind
            train_extra = manifest.extra

    if cfg.fusion not in FUSION_MODES:
        problems.append(f"--fusion must be one of {', '.join(FUSION_MODES)}, got {cfg.fusion!r}")
    if cfg.caption_fusion not in CAPTION_FUSION_MODES:
        problems.append(f"--caption-fusion must be one of {', '.join(CAPTION_FUSION_MODES)}, got {cfg.caption_fusion!r}")
    if cfg.fusion != "none":
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
    from dftrain.train.object_draws import OBJECT_LABEL_MODES, OBJECT_LATENT_MODES

    if cfg.object_label not in OBJECT_LABEL_MODES:
        problems.append(f"--object-label must be one of {', '.join(OBJECT_LABEL_MODES)}, got {cfg.object_label!r}")
    if cfg.object_latent not in OBJECT_LATENT_MODES:
        problems.append(f"--object-latent must be one of {', '.join(OBJECT_LATENT_MODES)}, got {cfg.object_latent!r}")
    _check_range(problems, "w_lat", cfg.w_lat, 0.0, 1.0)
    _check_range(problems, "w_emb", cfg.w_emb, 0.0, 1.0)
    _check_range(problems, "text_mitigation_p", cfg.text_mitigation_p, 0.0, 1.0)
    _check_range(problems, "embed_noise_sigma", cfg.embed_noise_sigma, 0.0, None)
    _check_range(problems, "mixup_alpha", cfg.mixup_alpha, 0.0, None)
    for name in ("caption_replace_tokens", "word_insert_tokens", "word_repeat_words"):
        _check_range(problems, name, getattr(cfg, name), 1, None)
    for name, count in (("caption_replace", "caption_replace_tokens"), ("word_insert", "word_insert_tokens"),
                        ("word_repeat", "word_repeat_words"), ("mixup_per_sample", None), ("object_flip", None)):
        if not isinstance(getattr(cfg, name), bool):  # e.g. an old `word_repeat: 2` in a YAML file
            hint = f" (the count is --{count.replace('_', '-')})" if count else ""
            problems.append(f"--{name.replace('_', '-')} is a switch: true or false, got {getattr(cfg, name)!r}{hint}")
    _check_range(problems, "ema_decay", cfg.ema_decay, 0.0, 1.0)
    if cfg.caption_field not in CAPTION_FIELDS:
        problems.append(f"--caption-field must be one of {', '.join(CAPTION_FIELDS)}, got {cfg.caption_field!r}")

    for name in ("steps", "micro_batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_checkpoints"):
        _check_range(problems, name, getattr(cfg, name), 1, None)
    _check_range(problems, "warmup_steps", cfg.warmup_steps, 0, None)
    _check_range(problems, "grad_clip", cfg.grad_clip, 0.0, None)
    _check_range(problems, "shuffle_buffer", cfg.shuffle_buffer, 0, None)
    from dftrain.train.duplication import DUP_SAMPLING_MODES

    if cfg.dup_sampling not in DUP_SAMPLING_MODES:
        problems.append(f"--dup-sampling must be one of {', '.join(DUP_SAMPLING_MODES)}, got {cfg.dup_sampling!r}")
    _check_range(problems, "dup_fraction", cfg.dup_fraction, 0.0, 1.0)
    _check_range(problems, "dup_weight", cfg.dup_weight, 1, None)
    if cfg.num_workers is not None:
        _check_range(problems, "num_workers", cfg.num_workers, 0, None)
    _check_range(problems, "object_cache_mb", cfg.object_cache_mb, 0, None)
    if cfg.lr is None or cfg.lr <= 0:
        problems.append(f"--lr must be > 0, got {cfg.lr}")
    if cfg.resolution is not None and (cfg.resolution < 8 or cfg.resolution % 8):
        problems.append(f"--resolution must be a multiple of 8, got {cfg.resolution}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        problems.append(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.prediction_type is not None and cfg.prediction_type not in PREDICTION_TYPES:
        problems.append(f"--prediction-type must be one of {', '.join(PREDICTION_TYPES)}")

    if cfg.precision not in PRECISIONS:
        problems.append(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    elif cfg.precision == "fp16" and not cuda_available():
        problems.append("--precision fp16 is not supported on CPU (DeepSpeed refuses it): use bf16 or fp32")
    if cfg.attention not in ATTENTIONS:
        problems.append(f"--attention must be one of {', '.join(ATTENTIONS)}, got {cfg.attention!r}")
    elif cfg.attention == "xformers" and not cuda_available():
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

    if cfg.resume not in (None, "auto") and not Path(cfg.resume).exists():
        problems.append(f"--resume: checkpoint not found: {cfg.resume} (or pass --resume auto)")

    # Precomputed latents: both sets must be latents, and text-level options need the text encoder.
    train_latents = facts.get("train_kind") == "latents"
    facts["precomputed"] = train_latents
    # latents folders from before --text-states always held text states
    facts["stored_text"] = train_latents and bool(train_extra.get("text_states", True))
    if cfg.fusion != "none" and "objects_kind" in facts:
        objects_latents = facts["objects_kind"] == "latents"
        if objects_latents != train_latents:
            problems.append(
                "training shards and object bank must both be precomputed latents or both images "
                f"(got {facts.get('train_kind')!r} and {facts['objects_kind']!r}); run `dftrain precompute --objects`"
            )
    if facts["stored_text"]:
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
                f"{', '.join(bad)} change caption text, but {cfg.shards} holds precomputed text states: "
                "precompute without --text-states (or train from image shards) for these options"
            )

    if problems:
        raise ConfigError("invalid training configuration:\n  - " + "\n  - ".join(problems))
    return facts


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
