"""The pgolf model: a compact GPT trained under the Parameter Golf limits (16,000,000-byte artifact, 10 minutes).

Modules, one job each: ``config`` (typed settings and presets), ``model`` (the GPT), ``optim`` (Muon + Adam and the
schedule), ``data`` (the distributed shard loader), ``train`` (``python -m pgolf_model.train``), ``evaluate`` (exact
bits per byte), ``quant`` (weight quantization), ``artifact`` (the one-file model artifact) and ``budget`` (its byte
budget). Importing the package does nothing else.
"""
