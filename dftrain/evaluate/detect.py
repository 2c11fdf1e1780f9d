"""`dftrain detect`: flag memorized prompts without the training set (beyond the paper).

Wen et al., "Detecting, Explaining, and Mitigating Memorization in Diffusion Models" (ICLR 2024):
a model that memorized an image under a prompt predicts, from pure noise onwards, a noise that the
prompt pulls far from the unconditional prediction. Per prompt, the score is the magnitude of the
text-conditional noise prediction,

    d = mean over the first K sampling steps and G generations of || eps(x_t, c) - eps(x_t, c_empty) ||_2

(the L2 norm over the latent of one generation), sampled with classifier-free guidance as the
pipeline would sample. A prompt whose score is above the threshold is flagged. No training image is
needed: only the pipeline.

    dftrain detect --model PIPELINE --shards TRAIN --out detect.jsonl      # the training captions
    dftrain detect --model PIPELINE --prompts prompts.txt --out detect.jsonl --threshold 2.5

Threshold: a fixed value (--threshold X, in the model's units), or by default an outlier rule over
the prompts scored in the run: median + 3 x 1.4826 x MAD (a robust z-score above 3), which needs no
labels but assumes that most prompts are not memorized.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dftrain.errors import ConfigError
from dftrain.files import atomic_path

log = logging.getLogger("dftrain.detect")

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
AUTO_Z = 3.0


@dataclass
class DetectOptions:
    steps: int = 50  # the sampling schedule (as in generation)
    first_steps: int = 5  # how many of its first steps are measured
    generations: int = 4  # starting noises per prompt
    guidance: float = 7.5  # classifier-free guidance of the sampling trajectory
    seed: int = 0
    batch_size: int = 8  # prompts per UNet call
    threshold: float | None = None  # None: median + 3 x 1.4826 x MAD over the scored prompts
    device: str | None = None
    dtype: str = "auto"

    def check(self) -> None:
        for name in ("steps", "first_steps", "generations", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.first_steps > self.steps:
            raise ConfigError(f"--first-steps ({self.first_steps}) cannot exceed --steps ({self.steps})")


def text_conditional_magnitudes(unet, scheduler, cond, uncond, latents, *, steps: int, first_steps: int,
                                guidance: float, generator=None):
    """[n, first_steps]: || eps(x_t, c) - eps(x_t, empty) ||_2 per trajectory and measured step.

    cond / uncond: [n, T, D] text states; latents: [n, C, h, w] initial noise (unscaled, N(0, I)).
    The trajectory follows guided sampling: eps = eps_u + guidance (eps_c - eps_u).
    """
    import inspect

    import torch

    scheduler.set_timesteps(steps, device=latents.device)
    # stochastic schedulers (DDPM) draw their variance noise from this generator: reproducible
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    x = latents * scheduler.init_noise_sigma
    rows = []
    with torch.no_grad():
        for t in scheduler.timesteps[:first_steps]:
            model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            eps = unet(model_in, t, encoder_hidden_states=torch.cat([cond, uncond])).sample.float()
            eps_c, eps_u = eps.chunk(2)
            rows.append((eps_c - eps_u).flatten(1).norm(dim=1))
            x = scheduler.step((eps_u + guidance * (eps_c - eps_u)).to(x.dtype), t, x, **extra).prev_sample
    return torch.stack(rows, dim=1).cpu()


def robust_threshold(scores: Sequence[float], z: float = AUTO_Z) -> float:
    """median + z x 1.4826 x MAD: a score that far above the typical one is an outlier."""
    values = sorted(scores)
    if not values:
        raise ConfigError("no prompt scored: nothing to threshold")
    median = _median(values)
    mad = _median(sorted(abs(v - median) for v in values))
    return median + z * MAD_SCALE * mad


def _median(values: list[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (probability that a positive outranks a negative; ties count 1/2)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def _prompt_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def score_prompts(pipe, prompts: Sequence[str], options: DetectOptions) -> list[dict]:
    """One row per prompt: score, per-step and per-generation magnitudes (mean over the other axis)."""
    import torch

    options.check()
    unet, device = pipe.unet, pipe.device
    channels, size = unet.config.in_channels, unet.config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    rows = []
    g = options.generations
    for start in range(0, len(prompts), options.batch_size):
        chunk = list(prompts[start:start + options.batch_size])
        cond, uncond = pipe.encode_prompt(chunk, device, g, True)  # each prompt repeated g times
        noise = torch.stack([
            torch.randn((channels, size, size), generator=torch.Generator("cpu").manual_seed(
                _prompt_seed(options.seed, start + i) * 16 + k))
            for i in range(len(chunk)) for k in range(g)]).to(device=device, dtype=cond.dtype)
        # one generator per trajectory: a prompt's score does not depend on the batch it is in
        step_noise = [torch.Generator("cpu").manual_seed(_prompt_seed(options.seed, start + i) * 16 + k + 8)
                      for i in range(len(chunk)) for k in range(g)]
        d = text_conditional_magnitudes(unet, pipe.scheduler, cond, uncond, noise, steps=options.steps,
                                        first_steps=options.first_steps, guidance=options.guidance,
                                        generator=step_noise)
        d = d.view(len(chunk), g, options.first_steps)
        for i, prompt in enumerate(chunk):
            rows.append({"prompt": prompt, "score": round(d[i].mean().item(), 6),
                         "per_step": [round(v, 6) for v in d[i].mean(0).tolist()],
                         "per_generation": [round(v, 6) for v in d[i].mean(1).tolist()]})
    return rows


def flag(rows: list[dict], threshold: float | None) -> float:
    """Adds `flagged` to each row; returns the threshold used."""
    used = robust_threshold([r["score"] for r in rows]) if threshold is None else threshold
    for row in rows:
        row["flagged"] = row["score"] > used
    return used


def load_prompts(*, shards: str | Path | None = None, prompts_file: str | Path | None = None,
                 texts: Sequence[str] = (), num_prompts: int | None = None, seed: int = 0) -> list[dict]:
    """[{"prompt", "train_key"}] from training shards (original captions, as `generate` samples
    them), a file (one prompt per line) or given texts; unique prompts, first occurrence kept."""
    given = [x for x in (shards, prompts_file) if x is not None] + ([texts] if texts else [])
    if len(given) != 1:
        raise ConfigError("give exactly one of --shards, --prompts, --text")
    if shards is not None:
        from dftrain.evaluate.generate import training_prompts

        items = [{"prompt": caption, "train_key": key} for key, caption in training_prompts(shards, num_prompts, seed)]
    elif prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise ConfigError(f"prompts file not found: {path}")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        items = [{"prompt": line.strip(), "train_key": None} for line in lines if line.strip()]
    else:
        items = [{"prompt": t, "train_key": None} for t in texts]
    seen: set[str] = set()
    unique = [item for item in items if not (item["prompt"] in seen or seen.add(item["prompt"]))]
    if not unique:
        raise ConfigError("no prompts to score")
    return unique


def detect(model_dir: str | Path, items: list[dict], out: str | Path, options: DetectOptions | None = None) -> dict:
    """Score every prompt, flag the outliers, write OUT (JSON lines) and OUT.summary.json."""
    import torch

    from dftrain.evaluate.generate import load_pipeline

    options = options or DetectOptions()
    options.check()
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(model_dir, device, options.dtype)
    scored = score_prompts(pipe, [item["prompt"] for item in items], options)
    for item, row in zip(items, scored, strict=True):
        row["train_key"] = item.get("train_key")
    threshold = flag(scored, options.threshold)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in scored:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    scores = [r["score"] for r in scored]
    summary = {"model": str(Path(model_dir).resolve()), "prompts": len(scored),
               "flagged": sum(r["flagged"] for r in scored), "threshold": round(threshold, 6),
               "threshold_rule": "given" if options.threshold is not None else "median + 3 x 1.4826 x MAD",
               "score_median": round(_median(sorted(scores)), 6), "score_max": round(max(scores), 6),
               "options": asdict(options), "out": str(out)}
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not math.isfinite(threshold):
        log.warning("threshold is not finite: %s", threshold)
    return summary
