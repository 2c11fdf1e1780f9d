"""`dftrain train`: fine-tune the UNet with dual fusion under DeepSpeed.

    dftrain train --model M --shards S --objects O --fusion dual --out RUN [--deepspeed ds_configs/zero2.json]
    torchrun --standalone --nproc_per_node 2 -m dftrain train --config run.yaml --steps 100

Every option can also come from `--config FILE.yaml` (same names); flags override the file.
"""

from __future__ import annotations

import typer

app = typer.Typer()

O = typer.Option  # noqa: E741 - short alias keeps the long option list readable


@app.command("train")
def train(
    config: str = O(None, "--config", help="YAML file with any of these options (flags override it)."),
    model: str = O(None, help="Diffusers pipeline folder (unet, vae, text_encoder, tokenizer, scheduler)."),
    shards: str = O(None, help="Training shard folder (images, or latents from `dftrain precompute`)."),
    objects: str = O(None, help="Object-bank shard folder (needed for any fusion)."),
    out: str = O(None, help="Run folder: checkpoints/, metrics.jsonl, config.yaml, pipeline/."),
    fusion: str = O(None, help="none | latent | caption | dual (default: dual)."),
    caption_fusion: str = O(None, help="embed_add | tail_add (default: embed_add)."),
    w_lat: float = O(None, help="Latent fusion weight in 0..1 (default: 0.1)."),
    w_emb: float = O(None, help="Caption embedding fusion weight in 0..1 (default: 0.5)."),
    caption_field: str = O(None, help="txt (training caption) | orig (original caption in json) (default: txt)."),
    object_label: str = O(None, help="synonym (a random synonym of the object's class per draw, the paper's) | "
                                      "first (always the class name) (default: synonym)."),
    object_flip: bool = O(None, "--object-flip/--no-object-flip", help="Flip object images like training images (default: on)."),
    object_latent: str = O(None, help="sample (VAE posterior mean + std * noise, the paper's) | mean (default: sample)."),
    embed_noise_sigma: float = O(None, help="Baseline: Gaussian noise sigma on caption embeddings (default: 0 = off)."),
    mixup_alpha: float = O(None, help="Baseline: embedding mixup, one lambda ~ Beta(alpha, 1) per batch (default: 0 = off)."),
    mixup_per_sample: bool = O(None, "--mixup-per-sample/--no-mixup-per-sample", help="Mixup: one lambda per example."),
    multi_caption: bool = O(None, "--multi-caption/--no-multi-caption", help="Baseline: one random caption of several."),
    caption_replace: bool = O(None, "--caption-replace/--no-caption-replace",
                              help="Baseline: with probability p the caption becomes random BPE tokens."),
    word_insert: bool = O(None, "--word-insert/--no-word-insert",
                          help="Baseline: with probability p, random BPE tokens inserted at random positions."),
    word_repeat: bool = O(None, "--word-repeat/--no-word-repeat",
                          help="Baseline: with probability p, words of the caption inserted at random positions."),
    text_mitigation_p: float = O(None, help="Probability p of each text baseline per sample (default: 0.1, theirs)."),
    caption_replace_tokens: int = O(None, help="Tokens of a replaced caption (default: 4)."),
    word_insert_tokens: int = O(None, help="Random tokens inserted (default: 2)."),
    word_repeat_words: int = O(None, help="Words repeated (default: 2)."),
    resolution: int = O(None, help="Image size (default: UNet sample_size x VAE factor)."),
    random_flip: bool = O(None, "--random-flip/--no-random-flip", help="Random horizontal flip (default: on)."),
    shuffle_buffer: int = O(None, help="Shuffle buffer (examples) (default: 256)."),
    dup_sampling: str = O(None, help="Baseline: none | dup_both (a fraction of samples drawn with more weight) | "
                                      "dup_image (the same, each time with a random caption of theirs) (default: none)."),
    dup_fraction: float = O(None, help="Fraction of samples drawn with more weight (default: 0.05, theirs)."),
    dup_weight: int = O(None, help="Their weight: occurrences per epoch (default: 5, theirs)."),
    num_workers: int = O(None, help="Image-decoding processes per rank; 0 decodes in the training process "
                                     "(default: on GPUs min(4, cores per rank - 1); 0 on CPU-only hosts)."),
    object_cache_mb: int = O(None, help="Object-bank latents kept in RAM up to this many MiB, beyond it memory-mapped from RUN/.object-latents (default: 2048)."),
    steps: int = O(None, help="Optimizer steps (default: 1000)."),
    micro_batch_size: int = O(None, help="Examples per rank per micro-step (default: 4)."),
    grad_accum: int = O(None, help="Gradient accumulation steps (default: 1)."),
    lr: float = O(None, help="Peak learning rate (default: 5e-6, the paper's)."),
    lr_schedule: str = O(None, help="constant_with_warmup | cosine | constant (default: constant_with_warmup)."),
    warmup_steps: int = O(None, help="Warm-up steps (default: 5000, the paper's)."),
    weight_decay: float = O(None, help="AdamW weight decay (default: 0.01)."),
    grad_clip: float = O(None, help="Gradient clipping norm (DeepSpeed config) (default: 1.0)."),
    precision: str = O(None, help="bf16 | fp32 | fp16 (GPU only) (default: bf16)."),
    prediction_type: str = O(None, help="epsilon | v_prediction (default: the scheduler config's)."),
    deepspeed: str = O(None, "--deepspeed", help="DeepSpeed JSON (ds_configs/zero2.json, ...); batch and clipping are filled in."),
    zero_stage: int = O(None, help="ZeRO stage 0-3 (overrides the file's) (default: 2)."),
    gradient_checkpointing: bool = O(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    attention: str = O(None, help="sdpa | xformers (CUDA only) (default: sdpa)."),
    ema: bool = O(None, "--ema/--no-ema", help="Keep an EMA of the UNet (exported instead of the raw weights)."),
    ema_decay: float = O(None, help="EMA decay (default: 0.9999)."),
    seed: int = O(None, help="Seed (each rank adds its rank) (default: 0)."),
    checkpoint_every: int = O(None, help="Checkpoint every K steps (default: 500)."),
    keep_checkpoints: int = O(None, help="Complete checkpoints kept (default: 2)."),
    resume: str = O(None, help="auto (latest complete checkpoint of --out) or a checkpoint folder."),
    overwrite: bool = O(None, "--overwrite/--no-overwrite",
                        help="Start over in a run folder that holds another run (its checkpoints are removed)."),
    allow_changes: bool = O(None, "--allow-changes/--no-allow-changes",
                            help="Resume although options that change training (lr, batch, data, fusion) differ."),
    export: bool = O(None, "--export/--no-export", help="Export RUN/pipeline at the end (default: on)."),
    log_every: int = O(None, help="Metrics line every N steps (default: 10)."),
    tensorboard: bool = O(None, "--tensorboard/--no-tensorboard", help="Also write TensorBoard events."),
    progress: bool = O(None, "--progress/--no-progress", help="Progress bar on rank 0 (default: on)."),
    local_rank: int = O(None, "--local_rank", "--local-rank", hidden=True, help="Set by the deepspeed launcher."),
) -> None:
    """Fine-tune Stable Diffusion with dual fusion (latent + caption) under DeepSpeed ZeRO."""
    import logging
    import os

    from dftrain.train.config import build_config, validate

    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    flags = {k: v for k, v in locals().items() if k not in ("config", "local_rank", "logging", "os", "build_config", "validate")}
    cfg = build_config(config, flags)
    facts = validate(cfg)  # ConfigError before anything heavy is imported or computed

    from dftrain.train.trainer import train as run_training

    summary = run_training(cfg, facts=facts)
    if summary.get("interrupted"):
        raise typer.Exit(code=143)  # stopped by SIGTERM after a checkpoint: not finished
    if summary.get("history") and int(os.environ.get("RANK", "0")) == 0:
        last = summary["history"][-1]
        typer.echo(f"done: step {summary['step']}, loss {last['loss']:.4f}, {last['samples_per_s']:.2f} samples/s, run {summary['run_dir']}")
