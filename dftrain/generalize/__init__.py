"""LLM caption generalization (the paper's first intervention).

backends.py  one interface over vLLM, transformers and the embedded SmolLM2 model
prompts.py   the paper's chat prompt, the few-shot completion prompt, stricter retries
cleaning.py  cleaning and validation of raw LLM outputs
fallback.py  deterministic rule-based generalizer (the last step before original/drop)
generalizer.py the fallback chain over a batch of unique captions
stage.py     the shard stage: one output shard per input shard, resumable, split by rank
receipts.py  per-shard receipts (what makes a shard "finished") and the output manifest
embedded.py  GGUF -> cached safetensors folder for the embedded model

Heavy libraries (torch, transformers, vllm) are imported inside functions.
"""
