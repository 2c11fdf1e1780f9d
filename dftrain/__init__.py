"""dftrain: train text-to-image diffusion models that copy their training data less.

Implements "Mitigate Replication and Copying in Diffusion Models with Generalized
Caption and Dual Fusion Enhancement" (arXiv 2309.07254): LLM caption
generalization, a caption generality score, a DeepSpeed dual-fusion trainer and
the replication evaluation that measures the effect.
"""

__version__ = "0.1.0"
