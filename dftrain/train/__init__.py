"""Dual-fusion fine-tuning of Stable Diffusion under DeepSpeed.

Pure functions: fusion.py (latent / caption fusion), mitigations.py (prior-study baselines),
object_draws.py (the fused object's label, flip and posterior sample), schedule.py (lr multipliers). Configuration: config.py (the typed options + YAML + validation).
Data: data.py (training stream and object bank from shards), batch.py (examples -> UNet inputs).
Engine: models.py (pipeline parts), environment.py (launcher variables, devices), trainer.py
(the run as named steps: session, model, resume, inputs, steps, finish), checkpoint.py (layout, atomic completion, resume lookup), ema.py (ZeRO-3-safe EMA).
Outputs: precompute.py (latent shards), export.py (diffusers pipeline folder).
The deepspeed launcher runs `--module dftrain train ...` (dftrain.cli strips its --local_rank).
"""
