"""The byte budget of an artifact, or the estimate for a config before any training.

    python -m pgolf_model.budget RUN/model.pga              # each part's bytes and the total against 16,000,000
    python -m pgolf_model.budget --preset record-caseops    # the estimate; tokenizer: the preset's spec, typical size
    python -m pgolf_model.budget --preset baseline --tokenizer DIR [--model.num_layers 11 ...]   # a trained one
    python -m pgolf_model.budget --preset tiny --model.arch ssd --tokenizer DIR    # any model family's estimate

An artifact is read whole: every part's sha256 is checked and every part decoded (a corrupt file is an error, exit 2),
and the table says whether its model code is this pgolf's (``evaluate`` runs it) or not (``evaluate`` refuses it
without ``--trust-artifact-code``); nothing of the artifact runs here. The estimate is ``pgolf_model.export.estimate``:
exact but for the compressed weights, which come from a table measured on trained weights (``bench/size_table.py``);
it prints each codec's weights estimate under the table. The tokenizer's bytes are those of ``--tokenizer`` (a
directory or .pgt file), or, for a spec name or no tokenizer, the spec's typical artifact size
(``TYPICAL_TOKENIZER_BYTES``; ``PRESET_TOKENIZERS`` names each preset's spec). An estimate over the limit exits 1.
Under the table, the total as a submission: the artifact and, counted beside it, the ``train_gpt.py`` that
``pgolf_model.submit`` writes for such a run (``submission.stub``, which carries pgolf's code).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pgolf_data.tokenizer.artifact import artifact_path, from_artifact
from pgolf_data.tokenizer.spec import resolve_spec

from . import artifact
from .artifact import LIMIT
from .cli import add_config_arguments, arch_from_argv, command_parser, config_from_args, guarded
from .export.estimate import estimate, format_table, weights_estimates
from .presets import bind_tokenizer
from .submission import stub

# pgolf tokenizer artifacts (.pgt) measured, by spec (tokenizers/NAME.toml): what an estimate counts before the
# tokenizer exists. The records' own SentencePiece files are larger than what the 16 MB development corpus trains.
TYPICAL_TOKENIZER_BYTES = {
    "caseops_v1_sp8192": 103_239,  # the 1.0611 record's .model (366,510 B), imported with pgolf-data
    "sp8192": 22_061,  # trained on the development corpus
    "sp4096": 10_278,  # trained on the development corpus
    "sp1024": 2_164,  # trained on the development corpus
    "sp1024_lossless": 2_167,  # trained on the development corpus
}
# The spec each preset trains with (its docstring names the tokenizer).
PRESET_TOKENIZERS = {
    "baseline": "sp1024",
    "tiny": "sp1024",
    "smoke": "sp1024",
    "record-1.11": "sp1024",
    "record-caseops": "caseops_v1_sp8192",
    "record-latest": "caseops_v1_sp8192",
}


def tokenizer_for(cfg, name: str | None, given) -> tuple[object, int, str, str]:
    """``(config with the tokenizer's ids, tokenizer bytes, where they come from, its spec's name)``."""
    if name and (Path(name).is_dir() or Path(name).suffix == ".pgt"):
        path = artifact_path(name)
        data = path.read_bytes()
        tok = from_artifact(data, where=str(path))
        return bind_tokenizer(cfg, tok, keep=given), len(data), str(path), tok.spec.name
    spec = resolve_spec(name or PRESET_TOKENIZERS.get(cfg.preset, ""))
    if spec.name not in TYPICAL_TOKENIZER_BYTES:
        known = ", ".join(TYPICAL_TOKENIZER_BYTES)
        raise SystemExit(f"spec {spec.name}: no typical artifact size is known (known: {known}); give --tokenizer DIR")
    cfg = cfg.override({} if "model.vocab_size" in given else {"model.vocab_size": spec.vocab_size})
    return cfg, TYPICAL_TOKENIZER_BYTES[spec.name], f"the typical size of spec {spec.name}", spec.name


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.budget", __doc__)
    parser.add_argument("artifact", nargs="?", help="a model artifact; without it, estimate for the config flags")
    parser.add_argument(
        "--tokenizer", help="tokenizer directory or .pgt file, or a spec name (its typical size; default: the preset's)"
    )
    parser.add_argument("--limit", type=int, default=LIMIT, help="byte limit (default: the challenge's)")
    add_config_arguments(parser, arch_from_argv(argv))
    args = parser.parse_args(argv)
    return guarded(
        lambda: artifact_budget(args) if args.artifact else estimate_budget(args), (ValueError, FileNotFoundError)
    )


def artifact_budget(args) -> int:
    art = artifact.read(args.artifact)
    art.tokenizer()  # decoded too: a version-1 file's corrupt tokenizer part is an error here as in evaluate
    print(format_table(art.sizes, args.limit, title=f"{args.artifact} (weights: {art.weights_codec})"))
    foreign = art.foreign_model_code()
    if foreign:
        print(f"  model code differs from this pgolf's ({', '.join(foreign)}): evaluate needs --trust-artifact-code")
    else:
        print("  model code is the installed code (sha256 of each file): evaluate runs it")
    if art.unverified_note:
        print(f"note: {art.unverified_note}", file=sys.stderr)
    return 0 if art.total_bytes <= args.limit else 1


def estimate_budget(args) -> int:
    cfg, given = config_from_args(args)
    cfg, tokenizer_bytes, source, spec_name = tokenizer_for(cfg, args.tokenizer, given)
    sizes = estimate(cfg, tokenizer_bytes)
    title = f"estimate for preset {cfg.preset} (weights estimated, codec {cfg.quant.codec}; tokenizer: {source})"
    print(format_table(sizes, args.limit, title=title))
    per_codec = ", ".join(f"{c} {b:,}" for c, b in weights_estimates(cfg).items())
    print(f"  weights by codec: {per_codec}")
    # A submission counts its train_gpt.py beside the artifact: pgolf_model.submit's stub carries pgolf's code.
    if cfg.arch not in artifact.BUILTIN_MODELS:
        print(f"  as a submission: pgolf_model.submit writes no train_gpt.py for {cfg.arch!r}, a plugin's family")
        return 0 if sum(sizes.values()) <= args.limit else 1
    code = stub.estimated_bytes(cfg.to_dict(), spec_name)
    total = sum(sizes.values()) + code
    verdict = "fits" if total <= args.limit else "OVER"
    print(
        f"  as a submission, with pgolf_model.submit's train_gpt.py ({code:,} bytes): {total:,}, {verdict}: "
        f"{args.limit - total:+,} bytes"
    )
    return 0 if sum(sizes.values()) <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
