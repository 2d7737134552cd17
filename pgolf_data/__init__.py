"""pgolf data: corpora, tokenizers, official-format shards with byte sidecars."""

__version__ = "0.1.0"
