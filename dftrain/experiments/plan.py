"""The plan of an experiment (`dftrain reproduce`, `dftrain demo`): which stage writes where, with
which `dftrain` command line. Nothing runs here (dftrain.experiments.run does).

experiment file -> data (the synthetic memorization regime, or the older plain set) -> tiny model
-> generalized captions (once, shared by all seeds) -> for every (variant, seed): train -> generate
from the ORIGINAL captions -> evaluate (primary copy descriptor, plus any extra ones) -> evaluate
against the held-out images -> compare per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dftrain.errors import DftrainError
from dftrain.experiments.config import Experiment, Variant, check_pipeline_folder, regime_defaults
from dftrain.experiments.stages import Stage

REPO = Path(__file__).resolve().parent.parent.parent  # the source tree (relative ds_configs/ paths)


@dataclass(frozen=True)
class Layout:
    """Where every stage of one reproduce run writes."""

    out: Path
    regime: bool = False  # data from the memorization regime: its held-out scenes are DIR/data/heldout

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def train_shards(self) -> Path:
        return self.data / "train"

    @property
    def objects(self) -> Path:
        return self.data / "objects"

    @property
    def general_shards(self) -> Path:
        return self.data / "general"

    @property
    def heldout(self) -> Path:
        """Unseen images of the same synthetic distribution (another seed): fit without rewarding copies."""
        return self.data / "heldout" if self.regime else self.data / "heldout" / "train"

    @property
    def model(self) -> Path:
        return self.out / "model"

    def run(self, variant: str, seed: int) -> Path:
        return self.out / "runs" / variant / f"seed{seed}"

    def generations(self, variant: str, seed: int) -> Path:
        return self.out / "generations" / variant / f"seed{seed}"

    def evaluation(self, variant: str, seed: int) -> Path:
        return self.out / "eval" / variant / f"seed{seed}"

    def extra_evaluation(self, descriptor: str, variant: str, seed: int) -> Path:
        """The evaluation with an extra copy descriptor (evaluate.extra_descriptors)."""
        return self.out / f"eval_{descriptor}" / variant / f"seed{seed}"

    def heldout_evaluation(self, variant: str, seed: int) -> Path:
        return self.out / "eval_heldout" / variant / f"seed{seed}"

    def compare(self, seed: int) -> Path:
        return self.out / "compare" / f"seed{seed}"


@dataclass
class Chain:
    """train -> generate -> evaluate of one variant and seed."""

    variant: str
    seed: int
    stages: list[Stage]


@dataclass
class Plan:
    setup: list[Stage]  # data, model, generalize: run first, in order
    chains: list[Chain]  # independent of each other
    layout: Layout



def option_flags(options: dict) -> list[str]:
    """{"micro_batch_size": 8, "ema": False, "no_cache": True} -> ["--micro-batch-size", "8", "--no-ema", "--no-cache"]."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                flags.append(flag)
            elif not name.startswith("no_"):  # a --no-x switch has no negative form: omitting it is False
                flags.append("--no-" + name.replace("_", "-"))
            continue
        if isinstance(value, list):  # a repeatable option (generalize --engine-arg)
            for item in value:
                flags += [flag, str(item)]
            continue
        flags += [flag, str(value)]
    return flags


def _deepspeed_path(value: str | None) -> str | None:
    if not value:
        return None
    path = Path(value)
    return str(path.resolve() if path.is_absolute() or path.exists() else REPO / path)


def _job_env(experiment: Experiment) -> dict[str, str]:
    threads = str(experiment.run["threads_per_job"])
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def regime_data_stages(experiment: Experiment, layout: Layout) -> list[Stage]:
    """One `dftrain shard synthetic --dup-images` stage: train, held-out scenes and the object bank."""
    d = regime_defaults(experiment.data)
    outputs = [layout.train_shards / "manifest.json", layout.objects / "manifest.json"]
    if d["heldout"]:
        outputs.append(layout.heldout / "manifest.json")
    return [Stage("data", ["shard", "synthetic", "--out", str(layout.data), "--n", str(d["n"]),
                           "--dup-images", str(d["dup_images"]), "--dup-factor", str(d["dup_factor"]),
                           "--heldout", str(d["heldout"]), "--size", str(d["size"]),
                           "--objects-per-class", str(d["objects_per_class"]), "--seed", str(d["seed"]),
                           "--samples-per-shard", str(d["samples_per_shard"])], outputs, env=_job_env(experiment))]


def plain_data_stages(experiment: Experiment, layout: Layout) -> list[Stage]:
    """The older plain synthetic set (--dup-fraction) and, unless data.heldout is false, a held-out set
    drawn by the same generator with another seed."""
    d, env = experiment.data, _job_env(experiment)
    stages = [
        Stage("data", ["shard", "synthetic", "--out", str(layout.data), "--n", str(d["n"]), "--size", str(d["size"]),
                       "--dup-fraction", str(d.get("dup_fraction", 0.0)),
                       "--objects-per-class", str(d.get("objects_per_class", 8)), "--seed", str(d.get("seed", 0)),
                       "--samples-per-shard", str(d.get("samples_per_shard", 100))],
              [layout.train_shards / "manifest.json", layout.objects / "manifest.json"], env=env),
    ]
    if d.get("heldout", True):
        stages.append(Stage("heldout", ["shard", "synthetic", "--out", str(layout.heldout.parent), "--n",
                                        str(d.get("heldout_n", d["n"])), "--size", str(d["size"]),
                                        "--dup-fraction", "0", "--objects-per-class", "1",
                                        "--seed", str(d.get("heldout_seed", d.get("seed", 0) + 1000))],
                            [layout.heldout / "manifest.json"], env=env))
    return stages


def setup_stages(experiment: Experiment, layout: Layout) -> list[Stage]:
    m = experiment.model
    env = _job_env(experiment)
    stages = regime_data_stages(experiment, layout) if experiment.regime else plain_data_stages(experiment, layout)
    if m.get("source", "tiny") == "tiny":
        args = ["model", "tiny", "--out", str(layout.model), "--resolution", str(m.get("resolution", experiment.data["size"])),
                "--seed", str(m.get("seed", 0))]
        if m.get("vae_steps") is not None:
            args += ["--vae-steps", str(m["vae_steps"])]
        stages.append(Stage("model", args, [layout.model / "model_index.json"], env=env))
    if experiment.needs_generalized:
        g = experiment.generalize
        args = ["generalize", "--shards", str(layout.train_shards), "--out", str(layout.general_shards),
                "--backend", g.get("backend", "embedded")]
        if g.get("model"):
            args += ["--model", str(g["model"])]
        stages.append(Stage("generalize", args + option_flags(g.get("options", {})),
                            [layout.general_shards / "manifest.json"], env=env))
    return stages


def model_folder(experiment: Experiment, layout: Layout) -> Path:
    if experiment.model.get("source", "tiny") == "pipeline":
        return Path(experiment.model["path"])
    return layout.model


def chain_stages(experiment: Experiment, layout: Layout, variant: Variant, seed: int) -> list[Stage]:
    env = _job_env(experiment)
    run, gen, evaluation = layout.run(variant.name, seed), layout.generations(variant.name, seed), \
        layout.evaluation(variant.name, seed)
    shards = layout.general_shards if variant.captions == "generalized" else layout.train_shards
    train_options = {**experiment.train["options"], **variant.train}
    if experiment.model.get("resolution"):
        train_options.setdefault("resolution", experiment.model["resolution"])
    train_args = ["train", "--model", str(model_folder(experiment, layout)), "--shards", str(shards),
                  "--out", str(run), "--fusion", variant.fusion, "--seed", str(seed),
                  "--overwrite"]  # a stage that runs again (interrupted, or its inputs changed) starts over
    if variant.fusion != "none":
        train_args += ["--objects", str(layout.objects)]
    deepspeed = _deepspeed_path(experiment.train.get("deepspeed"))
    if deepspeed:
        train_args += ["--deepspeed", deepspeed]
    train_args += option_flags(train_options)
    g = experiment.generate
    generate_args = ["generate", "--model", str(run / "pipeline"), "--shards", str(layout.train_shards),
                     "--out", str(gen), "--num-prompts", str(g["num_prompts"]), "--per-prompt", str(g["per_prompt"]),
                     "--steps", str(g["steps"]), "--guidance", str(g.get("guidance", 3.0)), "--seed", str(seed),
                     *option_flags(g.get("options", {}))]
    evaluate_args = ["evaluate", "--generations", str(gen), "--train-shards", str(layout.train_shards),
                     "--out", str(evaluation), *option_flags(experiment.evaluate.get("options", {}))]
    tag = f"{variant.name}_seed{seed}"
    stages = [
        Stage(f"train_{tag}", train_args, [run / "pipeline" / "model_index.json"],
              ranks=experiment.train.get("ranks", 1), env=env),
        Stage(f"generate_{tag}", generate_args, [gen / "prompts.jsonl"], env=env),
        Stage(f"evaluate_{tag}", evaluate_args, [evaluation / "report.json"], env=env),
    ]
    for descriptor in experiment.extra_descriptors:
        extra = layout.extra_evaluation(descriptor, variant.name, seed)
        options = {**experiment.evaluate.get("options", {}), "descriptor": descriptor, "weights": None, "threshold": None}
        stages.append(Stage(f"evaluate_{descriptor}_{tag}", ["evaluate", "--generations", str(gen), "--train-shards",
                                                          str(layout.train_shards), "--out", str(extra),
                                                          *option_flags(options)],
                            [extra / "report.json"], env=env))
    if experiment.has_heldout:
        heldout = layout.heldout_evaluation(variant.name, seed)
        stages.append(Stage(f"evaluate_heldout_{tag}", ["evaluate", "--generations", str(gen), "--train-shards",
                                                        str(layout.heldout), "--out", str(heldout),
                                                        *option_flags(experiment.evaluate.get("options", {}))],
                            [heldout / "report.json"], env=env))
    return stages


def build_plan(experiment: Experiment, out: Path) -> Plan:
    layout = Layout(Path(out), regime=experiment.regime)
    # Seed-major order: if the budget runs out, the finished seeds hold every variant.
    chains = [Chain(v.name, seed, chain_stages(experiment, layout, v, seed))
              for seed in experiment.seeds for v in experiment.variants]
    return Plan(setup_stages(experiment, layout), chains, layout)


def compare_stage(layout: Layout, seed: int, variants: list[str]) -> Stage | None:
    """`dftrain compare` of one seed's finished evaluations (None when the baseline did not finish)."""
    finished = [v for v in variants if (layout.evaluation(v, seed) / "report.json").is_file()]
    if "baseline" not in finished or len(finished) < 2:
        return None
    dirs = [str(layout.evaluation(v, seed)) for v in finished]
    return Stage(f"compare_seed{seed}", ["compare", *dirs, "--baseline", dirs[0], "--out", str(layout.compare(seed))],
                 [layout.compare(seed) / "compare.md"])


def check_inputs(experiment: Experiment) -> None:
    """Problems only visible on disk (a given model folder) before anything runs."""
    if experiment.model.get("source", "tiny") == "pipeline":
        problems = check_pipeline_folder(Path(experiment.model["path"]), experiment.model.get("architecture", "tiny"))
        if problems:
            raise DftrainError("; ".join(problems))
    deepspeed = _deepspeed_path(experiment.train.get("deepspeed"))
    if deepspeed and not Path(deepspeed).is_file():
        raise DftrainError(f"train.deepspeed: {experiment.train['deepspeed']} not found")
