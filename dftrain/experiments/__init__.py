"""Experiments: a typed experiment file -> a plan of stages -> their runs -> one report.

config  the experiment file (load, profile merge, validation; no compute)
plan    which stage writes where, with which `dftrain` command (Layout, build_plan)
stages  one stage = one `dftrain` subprocess, reused by the content of its inputs
run     run a plan: setup in order, (variant, seed) chains in parallel, compare per seed
stats   pure statistics over seeds (paired changes, p-values)
report  report.json / report.md from what the stages wrote
`dftrain reproduce` runs an experiment file; `dftrain demo` runs the packaged demo file (demo.yaml).
"""
