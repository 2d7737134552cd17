"""The pgolf model: compact language models (the GPT, the SSD, or a plugin's) trained under the Parameter Golf
limits (16,000,000-byte artifact, 10 minutes).

The layout follows the one boundary that matters: what a model artifact carries (its counted code,
``artifact.COUNTED_FILES``) and what runs on the host only.

Counted: ``config`` (typed settings, standard library only), ``model`` (the GPT), ``ssd`` (the state-space family),
``layers`` (what both families share), ``softcap_ce`` (chunked soft-capped cross-entropy), ``quant`` (the
quantized-weights format, dequantization), ``lowbit`` and ``hadamard`` (ternary/binary matrices, rotations undone on
dequantization), ``artifact`` (the one-file artifact and the loader of its own code), ``pergroup`` (the per-group
weights codec),
``runtime`` (device and torch.distributed), and ``evaluation`` (exact BPB, byte counts, score-first TTT, LoRA).

Host: ``registry`` (the model interface and the families by name: built-ins and ``pgolf.models`` plugins),
``training`` (the trainer, Muon and the schedule, the shard loader, checkpoints, late QAT), ``export`` (calibration,
GPTQ, LQER, per-group quantization, bit allocation, the export, the budget estimate), ``presets`` (named configs,
``bind_tokenizer``), ``cli`` (the config flags) and the command lines ``train``, ``evaluate`` and ``budget``
(``python -m pgolf_model.train``). Importing the package does nothing else.
"""
