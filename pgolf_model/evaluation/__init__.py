"""Exact bits per byte of a validation stream (counted code: an artifact carries this package).

Modules: ``scoring`` (the result, windows, the running tally and the scorer: non-overlapping or sliding windows),
``byte_counts`` (the sidecars' exact bytes and the challenge scorer's per-piece formula), ``ttt`` (score-first
test-time training built on the scorer: full, LoRA and phased) and ``lora`` (per-document adapters).
"""
