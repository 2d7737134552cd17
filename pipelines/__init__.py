"""End-to-end recipes that compose pgolf_data and pgolf_model.

- ``tokenizer_ab``: the tokenizer A/B comparison (``python -m pipelines.tokenizer_ab``): budget-fair exact-BPB runs
  over seeds with a significance test and a report, and a screening mode without model training.
- ``cache``: content-addressed stage directories, so reruns redo only what changed or never finished.
- ``documents``, ``stages``, ``screening``, ``ngram``, ``sizing``, ``model_stages``, ``stats``, ``report``: the
  pieces the A/B recipe is made of, one job each.

Importing the package does nothing else.
"""
