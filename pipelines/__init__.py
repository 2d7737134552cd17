"""End-to-end recipes that compose pgolf_data and pgolf_model.

- ``tokenizer_ab``: the tokenizer A/B comparison (``python -m pipelines.tokenizer_ab``): budget-fair exact-BPB runs
  over seeds with a significance test and a report, and a screening mode without model training.
- ``ablate``: the record-stack ablation (``python -m pipelines.ablate``): every record-stack switch turned off in turn
  on the ``tiny`` preset, with a table of BPB, artifact bytes and training throughput.
- ``cache``: content-addressed stage directories, so reruns redo only what changed or never finished.
- ``documents``, ``stages``, ``screening``, ``ngram``, ``sizing``, ``model_stages``, ``stats``, ``report``: the
  pieces the A/B recipe is made of, one job each; ``recipe``: the settings and flags the two training recipes share.
- ``quickstart``: the main job end to end on one CPU (``python -m pipelines.quickstart``).

Importing the package does nothing else.
"""
