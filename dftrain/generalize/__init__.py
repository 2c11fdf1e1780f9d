"""LLM caption generalization (the paper's first intervention).

prompts.py   the paper's chat prompt, the few-shot completion prompt, stricter retries
cleaning.py  cleaning and validation of raw LLM outputs
fallback.py  deterministic rule-based generalizer (the last step before original/drop)
generalizer.py the fallback chain over a batch of unique captions
stage.py     the shard stage: one output shard per input shard, resumable, split by rank
options.py   the stage's options (one typed definition for the CLI and experiment files)
engine_args.py --engine-arg KEY=VALUE for vllm.LLM, checked against vLLM's source
records.py   per-caption records and the one writer of an output shard
table.py     the on-disk caption table of --dedup global (runs, parts, SQLite results)
passes.py    --dedup global: the collect, generalize and write passes
receipts.py  per-shard receipts (what makes a shard "finished") and the output manifest

The LLM backends (vLLM, transformers, the embedded SmolLM2) are in dftrain/llm/, shared with score.
Heavy libraries (torch, transformers, vllm) are imported inside functions.
"""
