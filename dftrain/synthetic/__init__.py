"""The embedded synthetic dataset: procedural images with LAION-like specific captions,
web-like duplicates, and a labelled object bank for dual fusion; and the memorization regime
(regime.py): many unique compositional scenes plus a few repeated many times.

    from dftrain.synthetic import synthetic_train_samples, synthetic_object_samples, write_synthetic
    from dftrain.synthetic import regime_train_samples, regime_heldout_samples, write_regime

Everything is a pure function of the seed (numpy RNG + PIL drawing, no downloads):
the same arguments give byte-identical JPEGs and captions. Each image draws from
its own RNG stream (seed, stream, index), so a sample does not depend on how many
others were generated before it.
"""

from dftrain.synthetic.captions import caption_corpus
from dftrain.synthetic.dataset import (
    OBJECT_CLASS_NAMES,
    plan_duplicate_groups,
    render_object,
    render_scene,
    synthetic_object_samples,
    synthetic_train_samples,
    write_regime,
    write_synthetic,
)
from dftrain.synthetic.regime import regime_heldout_samples, regime_train_samples

__all__ = [
    "OBJECT_CLASS_NAMES",
    "caption_corpus",
    "plan_duplicate_groups",
    "regime_heldout_samples",
    "regime_train_samples",
    "render_object",
    "render_scene",
    "synthetic_object_samples",
    "synthetic_train_samples",
    "write_regime",
    "write_synthetic",
]
