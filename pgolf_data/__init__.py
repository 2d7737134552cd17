"""pgolf data: corpora, tokenizers, official-format shards with byte sidecars (CLI ``pgolf-data``).

Modules, in the order data flows through them (file formats in docs/formats.md):

- ``corpus``: document sources (files, directories, Hugging Face datasets, the embedded default) and the corpus hash;
- ``tokenizer/``: the tokenizer kinds behind one interface, their specs, training and compact artifacts;
- ``shards``: the shard format (header, names, reader); ``sharding``: the parallel shard writer; ``journal``: its
  resume journal; ``manifest``: ``manifest.json``; ``verify``: checks a shard directory against its manifest;
  ``inspect_shard``: describes one shard or directory;
- ``scale/``: the same shards from datatrove pipelines on a local, Slurm or Ray executor (the ``scale`` extra);
- ``compress``: the deterministic compressors shared with the model artifact;
- ``cli`` (``cli_args``, ``cli_tokenizer``, ``cli_shards``, ``cli_scale``): the ``pgolf-data`` command, a thin layer
  over the above.
"""

__version__ = "0.1.0"
