"""The experiment file of `dftrain reproduce`: load, apply a profile, validate (no compute).

An experiment file (experiments/mini.yaml) has shared sections and a `profiles:` mapping whose
entries override them (deep merge): `cpu` sizes the run for a 2-core machine, `gpu` for one GPU.

    seeds, variants, data, model, generalize, train, generate, evaluate, mitigations, run,
    custom_variants (optional), profiles

Every problem found is collected and raised together as one ConfigError.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError

CAPTION_SOURCES = ("original", "generalized")
FUSIONS = ("none", "latent", "caption", "dual")
MODEL_SOURCES = ("tiny", "pipeline")
ARCHITECTURES = ("tiny", "sd21")
TOP_LEVEL_KEYS = {"name", "description", "seeds", "variants", "data", "model", "generalize", "train", "generate",
                  "evaluate", "mitigations", "run", "custom_variants", "profiles"}
REQUIRED_KEYS = ("seeds", "variants", "data", "model", "train", "generate")
# `dftrain train` options the orchestrator sets itself (per variant and seed).
RESERVED_TRAIN_OPTIONS = {"config", "model", "shards", "objects", "out", "fusion", "seed", "resume", "local_rank",
                          "deepspeed"}
RESERVED_GENERATE_OPTIONS = {"model", "shards", "out", "num_prompts", "per_prompt", "steps", "guidance", "seed"}
RESERVED_EVALUATE_OPTIONS = {"generations", "train_shards", "out"}
# Descriptors that need no weights file, so an extra evaluation can name them alone.
EXTRA_DESCRIPTORS = ("embedded", "sscd")

# Parameters of the prior study's mitigations (Somepalli et al. 2023), used by the built-in variants.
DEFAULT_MITIGATIONS = {"embed_noise_sigma": 0.1, "mixup_alpha": 0.4, "text_mitigation_p": 0.1}


@dataclass(frozen=True)
class Variant:
    name: str
    captions: str  # original | generalized: which shards the model is trained on
    fusion: str  # dftrain train --fusion
    train: dict[str, Any] = field(default_factory=dict)  # extra `dftrain train` options
    description: str = ""


def builtin_variants(mitigations: dict[str, Any]) -> dict[str, Variant]:
    m = {**DEFAULT_MITIGATIONS, **mitigations}
    variants = [
        Variant("baseline", "original", "none", {}, "original captions, no mitigation"),
        Variant("generalized", "generalized", "none", {}, "generalized captions (paper, section 3.1)"),
        Variant("dual_fusion", "original", "dual", {}, "latent + caption fusion with the object bank"),
        Variant("generalized_dual_fusion", "generalized", "dual", {}, "generalized captions + dual fusion (the paper's method)"),
        Variant("embed_noise", "original", "none", {"embed_noise_sigma": m["embed_noise_sigma"]},
                f"prior study: Gaussian noise on caption embeddings (sigma {m['embed_noise_sigma']})"),
        Variant("caption_replace", "original", "none",
                {"caption_replace": True, "text_mitigation_p": m["text_mitigation_p"]},
                f"prior study: caption replaced by 4 random tokens (p {m['text_mitigation_p']})"),
        Variant("mixup", "original", "none", {"mixup_alpha": m["mixup_alpha"]},
                f"prior study: caption embedding mixup (alpha {m['mixup_alpha']})"),
        Variant("word_repeat", "original", "none", {"word_repeat": True, "text_mitigation_p": m["text_mitigation_p"]},
                f"prior study: 2 words of the caption repeated (p {m['text_mitigation_p']})"),
        Variant("word_insert", "original", "none", {"word_insert": True, "text_mitigation_p": m["text_mitigation_p"]},
                f"prior study: 2 random tokens inserted (p {m['text_mitigation_p']})"),
    ]
    return {v.name: v for v in variants}


@dataclass(frozen=True)
class Experiment:
    name: str
    profile: str
    description: str
    seeds: list[int]
    variants: list[Variant]
    data: dict[str, Any]  # dftrain shard synthetic: n, size, dup_fraction, objects_per_class, seed
    model: dict[str, Any]  # source tiny|pipeline, resolution, seed, path, architecture
    generalize: dict[str, Any]  # backend, model, options
    train: dict[str, Any]  # ranks, deepspeed, options (dftrain train flags)
    generate: dict[str, Any]  # num_prompts, per_prompt, steps, guidance, options
    evaluate: dict[str, Any]  # options (dftrain evaluate flags)
    run: dict[str, Any]  # parallel, threads_per_job
    default_profile: str = ""  # the file's first profile
    source: str = ""  # the file it came from
    raw: dict[str, Any] = field(default_factory=dict)  # the merged mapping, for the run's record

    @property
    def needs_generalized(self) -> bool:
        return any(v.captions == "generalized" for v in self.variants)

    @property
    def regime(self) -> bool:
        """Data from the memorization regime (n unique scenes + a duplicated subset + held-out scenes)."""
        return is_regime(self.data)

    @property
    def has_heldout(self) -> bool:
        if self.regime:
            return regime_defaults(self.data)["heldout"] > 0
        return bool(self.data.get("heldout", True))

    @property
    def extra_descriptors(self) -> list[str]:
        """Copy descriptors evaluated besides the primary one (evaluate.options.descriptor)."""
        return list(self.evaluate.get("extra_descriptors", []))


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_seeds(text: str | list | None) -> list[int] | None:
    """`0,1,2` or a YAML list -> [0, 1, 2]; ConfigError for anything else."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else text
    if not isinstance(items, list | tuple):
        raise ConfigError(f"seeds must be a list of integers or '0,1,2', got {text!r}")
    seeds = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"seeds must be integers >= 0, got {item!r}")
        try:
            seed = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"seeds must be integers >= 0, got {item!r}") from None
        if seed < 0 or (not isinstance(item, str) and seed != item):
            raise ConfigError(f"seeds must be integers >= 0, got {item!r}")
        seeds.append(seed)
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: repeated seed in {seeds}")
    return seeds


def parse_variant_names(text: str | list | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ConfigError(f"variants must be a non-empty list of names, got {text!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"variants: repeated name in {names}")
    return names


def _read_yaml(path: Path) -> dict:
    from dftrain.options import read_yaml_mapping

    return read_yaml_mapping(path, kind="experiment file", holds="sections")


def _section(problems: list[str], data: dict, name: str) -> dict:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        problems.append(f"{name}: expected a mapping, got {type(value).__name__}")
        return {}
    return value


def _number(problems: list[str], where: str, value: Any, *, lo: float, hi: float | None = None,
            integer: bool = False, hi_open: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type:
        problems.append(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
        return
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if value < lo or too_high:
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}{')' if hi_open else ']'}"
        problems.append(f"{where}: must be {bound}, got {value!r}")


def _options(problems: list[str], where: str, value: Any, reserved: set[str], *, lists: bool = False
             ) -> dict[str, Any]:
    """A stage's options as single values (`lists`: also lists of single values, for repeatable options)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping of options")
        return {}
    out = {}
    for key, item in value.items():
        name = str(key).replace("-", "_")
        if name in reserved:
            problems.append(f"{where}.{key}: set by dftrain reproduce itself; remove it")
        elif isinstance(item, dict | list) and not (lists and isinstance(item, list)
                                                    and not any(isinstance(i, dict | list) for i in item)):
            problems.append(f"{where}.{key}: expected a single value, got {type(item).__name__}")
        else:
            out[name] = item
    return out


# `dftrain generalize` options the orchestrator sets itself (backend and model have their own keys).
RESERVED_GENERALIZE_OPTIONS = {"shards", "out", "backend", "model", "finalize"}


def check_generalize_section(problems: list[str], section: dict[str, Any]) -> dict[str, Any]:
    """generalize: {backend, model, options}, typed like `dftrain generalize` itself (one definition)."""
    from dftrain.generalize.options import GeneralizeOptions
    from dftrain.options import check_values

    unknown = set(section) - {"backend", "model", "options"}
    if unknown:
        problems.append(f"generalize: unknown key(s) {', '.join(sorted(unknown))}")
    top = {k: section[k] for k in ("backend", "model") if section.get(k) is not None}
    problems.extend(check_values(GeneralizeOptions, top, "generalize"))
    options = _options(problems, "generalize.options", section.get("options"), RESERVED_GENERALIZE_OPTIONS,
                       lists=True)
    problems.extend(check_values(GeneralizeOptions, options, "generalize.options"))
    return {**section, "options": options}


def check_evaluate_options(values: dict[str, Any], where: str) -> list[str]:
    """evaluate.options typed as `dftrain evaluate` types them (the same EvaluateOptions model)."""
    from dftrain.evaluate.options import EvaluateOptions
    from dftrain.options import check_values

    return check_values(EvaluateOptions, values, where)


def check_train_options(values: dict[str, Any], where: str) -> list[str]:
    from dftrain.options import check_values
    from dftrain.train.config import TrainConfig

    return check_values(TrainConfig, values, where)


def _variants(problems: list[str], data: dict, mitigations: dict, names: list[str] | None) -> list[Variant]:
    known = builtin_variants(mitigations)
    custom = data.get("custom_variants") or {}
    if not isinstance(custom, dict):
        problems.append("custom_variants: expected a mapping name -> {captions, fusion, train}")
        custom = {}
    for name, spec in custom.items():
        where = f"custom_variants.{name}"
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        unknown = set(spec) - {"captions", "fusion", "train", "description"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        captions, fusion = spec.get("captions", "original"), spec.get("fusion", "none")
        if captions not in CAPTION_SOURCES:
            problems.append(f"{where}.captions: must be one of {', '.join(CAPTION_SOURCES)}, got {captions!r}")
        if fusion not in FUSIONS:
            problems.append(f"{where}.fusion: must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        train = _options(problems, f"{where}.train", spec.get("train"), RESERVED_TRAIN_OPTIONS)
        known[str(name)] = Variant(str(name), captions, fusion, train, str(spec.get("description", "")))
    try:
        names = names if names is not None else parse_variant_names(data.get("variants"))
    except ConfigError as exc:
        problems.append(str(exc))
        return []
    if not names:
        problems.append("variants: give at least one variant")
        return []
    unknown = [n for n in names if n not in known]
    if unknown:
        problems.append(f"variants: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return []
    if "baseline" not in names:
        problems.append("variants: 'baseline' is required (every reduction is measured against it)")
    # The baseline first: it is what the others are compared with, and what finishes first.
    names = ["baseline", *[n for n in names if n != "baseline"]] if "baseline" in names else names
    return [known[n] for n in names]


PLAIN_DATA_KEYS = {"n", "size", "dup_fraction", "objects_per_class", "seed", "samples_per_shard", "heldout",
                   "heldout_n", "heldout_seed"}
# The memorization regime (dftrain.synthetic.regime): n unique scenes, dup_images of them dup_factor times.
REGIME_DATA_KEYS = {"n", "size", "dup_images", "dup_factor", "heldout", "objects_per_class", "seed",
                    "samples_per_shard"}


def is_regime(data: dict) -> bool:
    """The data section describes the memorization regime (it names dup_images)."""
    return "dup_images" in data


def _check_data(problems: list[str], data: dict) -> None:
    for key in ("n", "size"):
        if key not in data:
            problems.append(f"data.{key} is required")
    regime = is_regime(data)
    allowed = REGIME_DATA_KEYS if regime else PLAIN_DATA_KEYS
    unknown = set(data) - allowed
    if unknown:
        hint = (" (the regime's held-out set is data.heldout: a count; dup_fraction belongs to the plain set)"
                if regime else "")
        problems.append(f"data: unknown key(s) {', '.join(sorted(unknown))}{hint}")
    if "n" in data:
        _number(problems, "data.n", data["n"], lo=1 if regime else 2, integer=True)
    if "size" in data:
        _number(problems, "data.size", data["size"], lo=16, integer=True)
    _number(problems, "data.objects_per_class", data.get("objects_per_class", 8), lo=1, integer=True)
    _number(problems, "data.seed", data.get("seed", 0), lo=0, integer=True)
    _number(problems, "data.samples_per_shard", data.get("samples_per_shard", 100), lo=1, integer=True)
    if regime:
        _check_regime_data(problems, data)
        return
    _number(problems, "data.dup_fraction", data.get("dup_fraction", 0.0), lo=0.0, hi=1.0, hi_open=True)
    if not isinstance(data.get("heldout", True), bool):
        problems.append(f"data.heldout: expected true or false, got {data['heldout']!r}")
    _number(problems, "data.heldout_n", data.get("heldout_n", data.get("n", 2)), lo=2, integer=True)
    seed = data.get("seed", 0)
    heldout_seed = data.get("heldout_seed", (seed if isinstance(seed, int) else 0) + 1000)
    _number(problems, "data.heldout_seed", heldout_seed, lo=0, integer=True)
    if heldout_seed == seed:
        problems.append("data.heldout_seed must differ from data.seed (held-out images must be unseen)")


def _check_regime_data(problems: list[str], data: dict) -> None:
    _number(problems, "data.dup_images", data["dup_images"], lo=0, integer=True)
    _number(problems, "data.dup_factor", data.get("dup_factor", 25), lo=2, integer=True)
    _number(problems, "data.heldout", data.get("heldout", 200), lo=0, integer=True)
    n, dup = data.get("n"), data["dup_images"]
    if isinstance(n, int) and isinstance(dup, int) and not isinstance(dup, bool) and dup > n:
        problems.append(f"data.dup_images ({dup}) cannot exceed data.n ({n}, the unique images)")


def regime_defaults(data: dict) -> dict:
    """The regime's data section with its defaults filled in (the ones `dftrain shard synthetic` uses)."""
    return {"dup_factor": 25, "heldout": 200, "objects_per_class": 8, "seed": 0, "samples_per_shard": 100, **data}


def _check_model(problems: list[str], model: dict, data: dict) -> None:
    unknown = set(model) - {"source", "resolution", "seed", "path", "architecture", "vae_steps"}
    if unknown:
        problems.append(f"model: unknown key(s) {', '.join(sorted(unknown))}")
    source = model.get("source", "tiny")
    if source not in MODEL_SOURCES:
        problems.append(f"model.source: must be one of {', '.join(MODEL_SOURCES)}, got {source!r}")
    if model.get("architecture", "tiny") not in ARCHITECTURES:
        problems.append(f"model.architecture: must be one of {', '.join(ARCHITECTURES)}, got {model.get('architecture')!r}")
    if source == "pipeline" and not model.get("path"):
        problems.append("model.path is required with model.source: pipeline (a diffusers pipeline folder)")
    if source == "tiny" and model.get("architecture", "tiny") != "tiny":
        problems.append("model.architecture: the tiny builder makes the tiny architecture only; use "
                        "model.source: pipeline with a folder of that architecture")
    resolution = model.get("resolution", data.get("size"))
    if resolution is not None:
        _number(problems, "model.resolution", resolution, lo=16, integer=True)
        if isinstance(resolution, int) and resolution % 8:
            problems.append(f"model.resolution: must be a multiple of 8, got {resolution}")
        if isinstance(data.get("size"), int) and isinstance(resolution, int) and resolution > data["size"]:
            problems.append(f"model.resolution {resolution} is larger than the images (data.size {data['size']})")
    _number(problems, "model.seed", model.get("seed", 0), lo=0, integer=True)


def _extra_descriptors(problems: list[str], value: Any, primary: str | None) -> list[str]:
    """evaluate.extra_descriptors: weight-free descriptors also reported (each another evaluate stage)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"evaluate.extra_descriptors: expected a list of descriptor names, got {value!r}")
        return []
    out = []
    for name in value:
        if name not in EXTRA_DESCRIPTORS:
            problems.append(f"evaluate.extra_descriptors: {name!r} is not one of {', '.join(EXTRA_DESCRIPTORS)}")
        elif name == (primary or "embedded") or name in out:  # evaluate's default
            problems.append(f"evaluate.extra_descriptors: {name!r} is already evaluated")
        else:
            out.append(name)
    return out


def check_pipeline_folder(path: Path, architecture: str) -> list[str]:
    """Problems with an existing diffusers pipeline folder (used when model.source is pipeline)."""
    import json

    problems = []
    if not path.is_dir():
        return [f"model.path {path} does not exist (a diffusers pipeline folder, e.g. stable-diffusion-2-1-base)"]
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            problems.append(f"model.path {path} has no {sub}/")
    config = path / "unet" / "config.json"
    if architecture == "sd21" and config.is_file():
        from dftrain.model.configs import sd21_unet_config

        unet = json.loads(config.read_text(encoding="utf-8"))
        want = sd21_unet_config(base=True)
        for key in ("block_out_channels", "cross_attention_dim", "layers_per_block", "down_block_types"):
            have, expected = unet.get(key), want[key]
            if isinstance(expected, list):
                have = list(have) if isinstance(have, list | tuple) else have
            if have != expected:
                problems.append(f"model.path {path}: unet {key} {unet.get(key)!r} is not SD 2.1's {want[key]!r}")
    return problems


def load_experiment(path: str | Path, profile: str | None = None, *, seeds: str | list | None = None,  # noqa: C901 (predates the complexity rule)
                    variants: str | list | None = None, overrides: dict | None = None) -> Experiment:
    """Read, merge the profile (default: the first listed) and validate; ConfigError lists all problems."""
    path = Path(path)
    data = _read_yaml(path)
    problems: list[str] = []
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        problems.append(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    profiles = data.get("profiles") or {"default": {}}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict | type(None)) for v in profiles.values()):
        raise ConfigError(f"{path}: profiles must map a name to a mapping of overrides")
    profile = profile or next(iter(profiles))
    if profile not in profiles:
        raise ConfigError(f"{path}: unknown profile {profile!r}; choose one of {', '.join(profiles)}")
    base = {k: v for k, v in data.items() if k != "profiles"}
    merged = deep_merge(base, profiles[profile] or {})
    if overrides:
        merged = deep_merge(merged, overrides)
    for key in REQUIRED_KEYS:
        if key not in merged:
            problems.append(f"missing section {key!r}")

    try:
        seed_list = parse_seeds(seeds) if seeds is not None else parse_seeds(merged.get("seeds"))
    except ConfigError as exc:
        problems.append(str(exc))
        seed_list = []
    mitigations = _section(problems, merged, "mitigations")
    unknown = set(mitigations) - set(DEFAULT_MITIGATIONS)
    if unknown:
        problems.append(f"mitigations: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_MITIGATIONS)}")
    try:
        variant_names = parse_variant_names(variants)
    except ConfigError as exc:
        problems.append(str(exc))
        variant_names = None
    variant_list = _variants(problems, merged, mitigations, variant_names) if "variants" in merged or variants else []

    data_section = _section(problems, merged, "data")
    _check_data(problems, data_section)
    model = _section(problems, merged, "model")
    _check_model(problems, model, data_section)

    generalize = check_generalize_section(problems, _section(problems, merged, "generalize"))

    train = _section(problems, merged, "train")
    unknown = set(train) - {"ranks", "deepspeed", "options"}
    if unknown:
        problems.append(f"train: unknown key(s) {', '.join(sorted(unknown))} (dftrain train flags go under train.options)")
    _number(problems, "train.ranks", train.get("ranks", 1), lo=1, integer=True)
    train_options = _options(problems, "train.options", train.get("options"), RESERVED_TRAIN_OPTIONS)
    # Typed like `dftrain train` itself (one definition): a wrong option fails here, not at run time.
    problems.extend(check_train_options(train_options, "train.options"))
    for variant in variant_list:
        problems.extend(check_train_options(variant.train, f"variant {variant.name}.train"))
    if "steps" not in train_options:
        problems.append("train.options.steps is required (every variant trains for the same budget)")
    train = {**train, "options": train_options}

    generate = _section(problems, merged, "generate")
    for key in ("num_prompts", "per_prompt", "steps"):
        if key not in generate:
            problems.append(f"generate.{key} is required")
        else:
            _number(problems, f"generate.{key}", generate[key], lo=1, integer=True)
    _number(problems, "generate.guidance", generate.get("guidance", 3.0), lo=0.0)
    unknown = set(generate) - {"num_prompts", "per_prompt", "steps", "guidance", "options"}
    if unknown:
        problems.append(f"generate: unknown key(s) {', '.join(sorted(unknown))}")
    generate = {**generate, "options": _options(problems, "generate.options", generate.get("options"),
                                                RESERVED_GENERATE_OPTIONS)}

    evaluate = _section(problems, merged, "evaluate")
    unknown = set(evaluate) - {"options", "extra_descriptors"}
    if unknown:
        problems.append(f"evaluate: unknown key(s) {', '.join(sorted(unknown))} (flags go under evaluate.options)")
    evaluate_options = _options(problems, "evaluate.options", evaluate.get("options"), RESERVED_EVALUATE_OPTIONS)
    problems.extend(check_evaluate_options(evaluate_options, "evaluate.options"))
    extra = _extra_descriptors(problems, evaluate.get("extra_descriptors"), evaluate_options.get("descriptor"))
    evaluate = {"options": evaluate_options, "extra_descriptors": extra}

    run = _section(problems, merged, "run")
    unknown = set(run) - {"parallel", "threads_per_job"}
    if unknown:
        problems.append(f"run: unknown key(s) {', '.join(sorted(unknown))}")
    _number(problems, "run.parallel", run.get("parallel", 1), lo=1, integer=True)
    _number(problems, "run.threads_per_job", run.get("threads_per_job", 1), lo=1, integer=True)

    if problems:
        raise ConfigError(f"invalid experiment {path} (profile {profile}):\n  - " + "\n  - ".join(problems))
    return Experiment(
        name=str(merged.get("name", path.stem)), profile=profile, description=str(merged.get("description", "")),
        seeds=seed_list, variants=variant_list, data=data_section, model=model, generalize=generalize,
        train=train, generate=generate, evaluate=evaluate,
        run={"parallel": run.get("parallel", 1), "threads_per_job": run.get("threads_per_job", 1)},
        default_profile=next(iter(profiles)), source=str(path), raw=merged,
    )
