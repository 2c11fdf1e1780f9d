"""`dftrain reproduce`: experiment files are validated before anything runs, and the plan is right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dftrain.errors import ConfigError
from dftrain.experiments.config import check_pipeline_folder, load_experiment, parse_seeds
from dftrain.experiments.plan import build_plan, option_flags
from dftrain.experiments.stats import paired_comparison

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "experiments" / "mini.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal() -> dict:
    return {
        "seeds": [0, 1],
        "variants": ["baseline", "generalized_dual_fusion"],
        "data": {"n": 16, "size": 32, "dup_fraction": 0.5},
        "model": {"source": "tiny", "resolution": 32},
        "train": {"options": {"steps": 10, "micro_batch_size": 2}},
        "generate": {"num_prompts": 4, "per_prompt": 1, "steps": 2},
    }


@pytest.mark.parametrize("profile", ["cpu", "cpu_prior", "cpu_early", "cpu_long", "gpu"])
def test_shipped_experiment_profiles_are_valid(profile):
    exp = load_experiment(MINI, profile)
    names = [v.name for v in exp.variants]
    assert names[0] == "baseline"
    paper = {"generalized_dual_fusion"} if profile == "cpu_long" else {"generalized", "dual_fusion",
                                                                       "generalized_dual_fusion"}
    assert paper <= set(names)
    if profile in ("cpu_prior", "gpu"):
        assert any(v.train for v in exp.variants), "at least one prior-study mitigation"
    assert len(exp.seeds) >= 3
    # the memorization regime: many unique scenes, a few duplicated many times; SSCD judges copies
    assert exp.regime and exp.data["dup_images"] < exp.data["n"] and exp.data["dup_factor"] >= 20
    assert exp.evaluate["options"]["descriptor"] == "sscd" and exp.has_heldout
    if profile == "gpu":
        assert exp.model["architecture"] == "sd21" and exp.model["resolution"] == 256
        assert exp.data["size"] == 256 and exp.data["n"] > load_experiment(MINI, "cpu").data["n"]
    else:
        assert exp.data["size"] <= 64 and exp.run["parallel"] == 2
        assert len(exp.seeds) >= 5 or profile == "cpu_early"


def test_the_earlier_plain_experiment_stays_loadable():
    exp = load_experiment(REPO / "experiments" / "earlier_plain.yaml")
    assert not exp.regime and exp.data["dup_fraction"] >= 0.5


def test_default_profile_is_the_first_listed():
    exp = load_experiment(MINI)
    assert exp.profile == exp.default_profile == "cpu"
    assert load_experiment(MINI, "gpu").default_profile == "cpu"


@pytest.mark.parametrize("seeds", ["a", "1,-2", "0,0", "", [1.5], [True]])
def test_bad_seeds_are_rejected(seeds):
    with pytest.raises(ConfigError, match="seed"):
        parse_seeds(seeds)


def test_seeds_and_variants_from_the_command_line(tmp_path):
    exp = load_experiment(_write(tmp_path, _minimal()), seeds="3,5", variants="embed_noise,baseline")
    assert exp.seeds == [3, 5]
    assert [v.name for v in exp.variants] == ["baseline", "embed_noise"]  # baseline first
    assert exp.variants[1].train == {"embed_noise_sigma": 0.1}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(variants=["baseline", "nonsense"]), "unknown 'nonsense'"),
        (lambda d: d.update(variants=["generalized"]), "'baseline' is required"),
        (lambda d: d.pop("train"), "missing section 'train'"),
        (lambda d: d["train"]["options"].pop("steps"), "steps is required"),
        (lambda d: d["train"]["options"].update(not_an_option=1), "train.options: unknown option 'not_an_option'"),
        # typed as `dftrain train` types them: a wrong value fails when the file loads, not at run time
        (lambda d: d["train"]["options"].update(lr="ten"), "train.options.lr: Input should be a valid number"),
        (lambda d: d.update(custom_variants={"x": {"train": {"w_lat": 2}}}, variants=["baseline", "x"]),
         "variant x.train.w_lat: Input should be less than or equal to 1, got 2"),
        (lambda d: d["train"]["options"].update(fusion="dual"), "set by dftrain reproduce itself"),
        # generalize.options typed as `dftrain generalize` types them (the same GeneralizeOptions model)
        (lambda d: d.update(generalize={"backend": "gpt"}), "generalize.backend: Input should be 'embedded'"),
        (lambda d: d.update(generalize={"options": {"batch_size": 0}}),
         "generalize.options.batch_size: Input should be greater than or equal to 1, got 0"),
        (lambda d: d.update(generalize={"options": {"no_such": 1}}), "generalize.options: unknown option 'no_such'"),
        (lambda d: d.update(generalize={"options": {"faithful": "yes"}}), "generalize.options.faithful"),
        (lambda d: d.update(generalize={"options": {"out": "x"}}), "generalize.options.out: set by dftrain"),
        # evaluate.options typed as `dftrain evaluate` types them (the same EvaluateOptions model)
        (lambda d: d.update(evaluate={"options": {"reference_n": 0}}),
         "evaluate.options.reference_n: Input should be greater than or equal to 1, got 0"),
        (lambda d: d.update(evaluate={"options": {"descriptor": "sift"}}), "evaluate.options.descriptor: Input should be"),
        (lambda d: d.update(evaluate={"options": {"bg_sample": 5}}), "evaluate.options: unknown option 'bg_sample'"),
        (lambda d: d["data"].update(dup_fraction=1.0), "data.dup_fraction"),
        (lambda d: d["data"].pop("n"), "data.n is required"),
        (lambda d: d["model"].update(resolution=36), "multiple of 8"),
        (lambda d: d["model"].update(source="pipeline"), "model.path is required"),
        (lambda d: d["generate"].pop("num_prompts"), "generate.num_prompts is required"),
        (lambda d: d.update(extra_section={}), "unknown section"),
        (lambda d: d.update(seeds=[]), "at least one seed"),
        (lambda d: d["data"].update(heldout_seed=0), "heldout_seed must differ"),
        (lambda d: d.update(custom_variants={"x": {"fusion": "sideways"}}, variants=["baseline", "x"]), "fusion"),
    ],
)
def test_invalid_experiments_raise_config_error(tmp_path, change, message):
    data = _minimal()
    change(data)
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, data))


def test_every_problem_is_reported_at_once(tmp_path):
    data = _minimal()
    data["variants"] = ["baseline", "bogus"]
    data["seeds"] = [-1]
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, data))
    assert "bogus" in str(info.value) and "seed" in str(info.value)


def test_unknown_profile(tmp_path):
    data = {**_minimal(), "profiles": {"cpu": {}, "gpu": {"data": {"size": 256}}}}
    with pytest.raises(ConfigError, match="unknown profile 'tpu'"):
        load_experiment(_write(tmp_path, data), "tpu")
    assert load_experiment(_write(tmp_path, data), "gpu").data["size"] == 256  # deep merge keeps data.n
    assert load_experiment(_write(tmp_path, data), "gpu").data["n"] == 16


def test_custom_variant(tmp_path):
    data = {**_minimal(), "variants": ["baseline", "mine"],
            "custom_variants": {"mine": {"captions": "generalized", "fusion": "latent", "train": {"w_lat": 0.2}}}}
    exp = load_experiment(_write(tmp_path, data))
    assert exp.variants[1].fusion == "latent" and exp.variants[1].train == {"w_lat": 0.2}


def test_plan_gives_every_variant_the_same_budget_and_original_prompts(tmp_path):
    data = _minimal()
    data["variants"] = ["baseline", "generalized", "dual_fusion", "generalized_dual_fusion", "caption_replace"]
    exp = load_experiment(_write(tmp_path, data))
    plan = build_plan(exp, tmp_path / "out")
    assert [s.name for s in plan.setup] == ["data", "heldout", "model", "generalize"]
    assert len(plan.chains) == 5 * 2
    assert [(c.variant, c.seed) for c in plan.chains[:2]] == [("baseline", 0), ("generalized", 0)]  # seed-major
    train_dir, general_dir = str(plan.layout.train_shards), str(plan.layout.general_shards)
    for chain in plan.chains:
        train, generate, evaluate, heldout = chain.stages
        args = train.args
        assert args[args.index("--steps") + 1] == "10" and args[args.index("--seed") + 1] == str(chain.seed)
        expected_shards = general_dir if chain.variant.startswith("generalized") else train_dir
        assert args[args.index("--shards") + 1] == expected_shards
        fusion = args[args.index("--fusion") + 1]
        assert fusion == ("dual" if "dual" in chain.variant else "none")
        assert ("--objects" in args) == (fusion != "none")
        # generations are prompted with the ORIGINAL captions and judged against the original images
        assert generate.args[generate.args.index("--shards") + 1] == train_dir
        assert evaluate.args[evaluate.args.index("--train-shards") + 1] == train_dir
        # fit against unseen images of the same distribution
        assert heldout.args[heldout.args.index("--train-shards") + 1] == str(plan.layout.heldout)
        assert heldout.args[heldout.args.index("--generations") + 1] == str(generate.args[generate.args.index("--out") + 1])
    replace = next(c for c in plan.chains if c.variant == "caption_replace")
    args = replace.stages[0].args
    assert "--caption-replace" in args and args[args.index("--text-mitigation-p") + 1] == "0.1"


def test_plan_without_generalized_variants_skips_generalize(tmp_path):
    data = _minimal()
    data["variants"] = ["baseline", "embed_noise"]
    plan = build_plan(load_experiment(_write(tmp_path, data)), tmp_path / "out")
    assert [s.name for s in plan.setup] == ["data", "heldout", "model"]
    data["data"]["heldout"] = False
    plan = build_plan(load_experiment(_write(tmp_path, data)), tmp_path / "out")
    assert [s.name for s in plan.setup] == ["data", "model"] and len(plan.chains[0].stages) == 3


def test_option_flags():
    assert option_flags({"micro_batch_size": 8, "ema": False, "progress": True, "no_cache": True,
                         "skip": None}) == ["--micro-batch-size", "8", "--no-ema", "--progress", "--no-cache"]
    assert option_flags({"no_cache": False}) == []
    # a repeatable option (generalize --engine-arg) from a list in the experiment file
    assert option_flags({"engine_arg": ["max_model_len=64", "seed=1"]}) == [
        "--engine-arg", "max_model_len=64", "--engine-arg", "seed=1"]


def test_generalize_engine_args_in_an_experiment_file_reach_the_stage_command(tmp_path):
    data = _minimal()
    data["generalize"] = {"backend": "vllm", "options": {"engine_arg": ["max_model_len=64"]}}
    plan = build_plan(load_experiment(_write(tmp_path, data)), tmp_path / "out")
    (stage,) = [s for s in plan.setup if s.name == "generalize"]
    assert stage.args[-2:] == ["--engine-arg", "max_model_len=64"]
    data["generalize"] = {"options": {"engine_arg": [{"a": 1}]}}
    with pytest.raises(ConfigError, match="generalize.options.engine_arg: expected a single value"):
        load_experiment(_write(tmp_path, data))


def test_pipeline_folder_check(tmp_path):
    from dftrain.model.configs import sd21_unet_config

    folder = tmp_path / "sd21"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / sub).mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps(sd21_unet_config(base=True)))
    assert check_pipeline_folder(folder, "sd21") == []
    (folder / "unet" / "config.json").write_text(json.dumps({**sd21_unet_config(), "block_out_channels": [32, 64]}))
    assert any("block_out_channels" in p for p in check_pipeline_folder(folder, "sd21"))
    assert "does not exist" in check_pipeline_folder(tmp_path / "nowhere", "sd21")[0]


def test_paired_comparison_detects_a_consistent_drop():
    base = {0: 0.90, 1: 0.80, 2: 0.85}
    lower = {0: 0.45, 1: 0.41, 2: 0.44}
    result = paired_comparison(base, lower)
    assert result["seeds"] == [0, 1, 2]
    assert result["change_pct"]["mean"] == pytest.approx(-49.3, abs=0.5)
    assert result["p_value"] < 0.01
    from scipy.stats import ttest_rel

    assert result["p_value"] == pytest.approx(ttest_rel([lower[s] for s in (0, 1, 2)], [base[s] for s in (0, 1, 2)]).pvalue)
    noisy = paired_comparison(base, {0: 0.95, 1: 0.70, 2: 0.86})
    assert noisy["p_value"] > 0.3


def test_stage_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path):
    import os
    import subprocess
    import sys

    from dftrain.errors import DftrainError
    from dftrain.experiments.run import stage_lock

    lock = tmp_path / ".stages" / "train_x.lock"
    with stage_lock(tmp_path, "train_x"):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(DftrainError, match="running in another process"):
            with stage_lock(tmp_path, "train_x"):
                pass
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # a process that has exited
    with stage_lock(tmp_path, "train_x"):
        assert lock.read_text() == str(os.getpid())
