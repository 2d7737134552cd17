"""Training a model on token shards (host only; ``python -m pgolf_model.train`` is the command line).

Modules: ``trainer`` (the run's named steps: inputs, warm-up, loop, export and score), ``clock`` (steps and training
seconds), ``optim`` (Muon, Adam groups, the schedule, the weight EMA), ``data`` (the distributed shard loader),
``checkpoint`` (resumable checkpoints) and ``qat`` (late quantization-aware training).
"""
