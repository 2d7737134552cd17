"""What a generated ``train_gpt.py`` runs: a frozen pgolf config under the challenge's command and environment.

``torchrun --standalone --nproc_per_node=8 train_gpt.py`` (or plain ``python train_gpt.py`` on one device) reads the
official environment variables -- ``DATA_PATH``, ``TOKENIZER_PATH``, ``VOCAB_SIZE``, ``SEED``, ``RUN_ID``,
``ITERATIONS``, ``MAX_WALLCLOCK_SECONDS`` and the other settings the baseline script reads (``ENV``) -- over the
frozen config, then trains with pgolf's trainer, quantizes, writes ``logs/<RUN_ID>/model.pga``, scores that artifact
as its config says (sliding windows, score-first TTT) and prints the final lines in the official format, both the
official byte formula's number and the exact one (``logs.score_lines``). ``logs/<RUN_ID>.txt`` is the whole run in
that format; ``logs/<RUN_ID>/`` is a pgolf run directory (``submit`` takes it as a RUN_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import torch

from pgolf_data.manifest import write_atomic
from pgolf_data.shards import ShardFormatError
from pgolf_data.tokenizer import TokenizerError
from pgolf_data.tokenizer.artifact import MAGIC as TOKENIZER_MAGIC
from pgolf_data.tokenizer.artifact import from_artifact, to_artifact
from pgolf_data.tokenizer.interop import import_tokenizer

from .. import artifact, runtime
from ..config import Config, ConfigError
from ..training.run_dir import RunDirError
from ..training.trainer import ARTIFACT_NAME, run
from .final import final_eval
from .runs import EVAL_NAME, load_run

# Bad input, reported as one line (as ``pgolf_model.train`` does): config, environment, paths, shards, tokenizer.
USER_ERRORS = (ConfigError, artifact.BudgetError, ShardFormatError, TokenizerError, FileNotFoundError, RunDirError)


def _flag(text: str) -> bool:
    return bool(int(text))


# The baseline train_gpt.py's environment variables that have a pgolf setting, and how to read them.
ENV: dict[str, tuple[str, object]] = {
    "SEED": ("train.seed", int),
    "ITERATIONS": ("train.iterations", int),
    "MAX_WALLCLOCK_SECONDS": ("train.max_minutes", lambda s: float(s) / 60),
    "TRAIN_BATCH_TOKENS": ("train.batch_tokens", int),
    "TRAIN_SEQ_LEN": ("train.seq_len", int),
    "VAL_LOSS_EVERY": ("train.val_every", int),
    "TRAIN_LOG_EVERY": ("train.log_every", int),
    "WARMUP_STEPS": ("train.compile_warmup_steps", int),  # the baseline's warm-up steps are undone, as pgolf's
    "WARMDOWN_ITERS": ("optim.warmdown_steps", int),
    "NUM_LAYERS": ("model.num_layers", int),
    "MODEL_DIM": ("model.model_dim", int),
    "NUM_HEADS": ("model.num_heads", int),
    "NUM_KV_HEADS": ("model.num_kv_heads", int),
    "MLP_MULT": ("model.mlp_mult", int),
    "TIE_EMBEDDINGS": ("model.tie_embeddings", _flag),
    "ROPE_BASE": ("model.rope_base", float),
    "LOGIT_SOFTCAP": ("model.logit_softcap", float),
    "QK_GAIN_INIT": ("model.qk_gain_init", float),
    "TIED_EMBED_INIT_STD": ("model.tied_embed_init_std", float),
    "EMBED_LR": ("optim.embed_lr", float),
    "HEAD_LR": ("optim.head_lr", float),
    "TIED_EMBED_LR": ("optim.tied_embed_lr", float),
    "MATRIX_LR": ("optim.matrix_lr", float),
    "SCALAR_LR": ("optim.scalar_lr", float),
    "MUON_MOMENTUM": ("optim.muon_momentum", float),
    "MUON_BACKEND_STEPS": ("optim.muon_ns_steps", int),
    "MUON_MOMENTUM_WARMUP_START": ("optim.muon_momentum_start", float),
    "MUON_MOMENTUM_WARMUP_STEPS": ("optim.muon_momentum_warmup_steps", int),
    "BETA1": ("optim.adam_beta1", float),
    "BETA2": ("optim.adam_beta2", float),
    "ADAM_EPS": ("optim.adam_eps", float),
    "GRAD_CLIP_NORM": ("optim.grad_clip_norm", float),
    "EVAL_STRIDE": ("eval.stride", int),
}


def env_overrides(environ: dict[str, str]) -> dict[str, object]:
    """The config changes the environment asks for; a value that does not parse names its variable."""
    changes = {}
    for name, (key, parse) in ENV.items():
        if name in environ:
            try:
                changes[key] = parse(environ[name])  # type: ignore[operator]
            except ValueError:
                raise ConfigError(f"{name}={environ[name]!r} is not a valid {key}") from None
    return changes


def tokenizer_artifact(path: Path, frozen: dict) -> bytes:
    """The tokenizer at ``TOKENIZER_PATH`` as a pgolf tokenizer artifact; it must be the runs' tokenizer."""
    if not path.is_file():
        raise FileNotFoundError(f"TOKENIZER_PATH {path} does not exist")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest not in (frozen["tokenizer_sha256"], frozen["tokenizer_export_sha256"]):
        raise TokenizerError(
            f"TOKENIZER_PATH {path} (sha256 {digest[:16]}) is not the tokenizer this script was made for "
            f"({frozen['tokenizer_file']}, sha256 {frozen['tokenizer_export_sha256'][:16]})"
        )
    if data.startswith(TOKENIZER_MAGIC):
        return data
    tok = import_tokenizer(
        data, name=frozen["tokenizer_name"], where=str(path), case_transform=frozen["case_transform"]
    )
    return to_artifact(tok)


def main(frozen: dict, script: str) -> int:
    """Train and score the frozen config (``frozen``: what ``stub.build`` embeds); ``script``: this file."""
    environ = dict(os.environ)
    cfg = Config.from_dict(frozen["config"], where="train_gpt.py: frozen config").override(env_overrides(environ))
    vocab = int(environ.get("VOCAB_SIZE", cfg.model.vocab_size))
    if vocab != cfg.model.vocab_size:
        raise ConfigError(f"VOCAB_SIZE={vocab}, but this script's model has {cfg.model.vocab_size} ids")
    data = environ.get("DATA_PATH", f"./data/datasets/fineweb10B_sp{vocab}")
    tok_path = Path(environ.get("TOKENIZER_PATH", f"./data/tokenizers/{frozen['tokenizer_file']}"))
    rt = runtime.setup("auto")
    run_id = rt.broadcast(environ.get("RUN_ID") or str(uuid.uuid4()))
    out = Path("logs") / run_id
    tokenizer_bytes = tokenizer_artifact(tok_path, frozen)
    from_artifact(tokenizer_bytes, where=str(tok_path))  # a readable tokenizer before any training
    tok_file = Path("logs") / f"{run_id}.tokenizer.pgt"  # beside the run directory, which holds one run only
    if rt.is_main:
        tok_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(tok_file, tokenizer_bytes)
    rt.barrier()
    device = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu"
    if rt.is_main:
        print(f"device_name:{device}\nworld_size:{rt.world_size}\nrun_dir:{out}", flush=True)
    run(cfg, data=data, tokenizer=tok_file, out_dir=out, rt=rt, progress=True)
    final = final_eval(out / ARTIFACT_NAME, data, rt)
    if rt.is_main:
        host = {"device_name": device, "cuda_version": torch.version.cuda}
        write_atomic(out / EVAL_NAME, (json.dumps({**final.to_dict(), **host}, indent=2) + "\n").encode())
        text = load_run(out).log_text(os.path.getsize(script))
        write_atomic(Path("logs") / f"{run_id}.txt", text.encode())
        print(text[text.index("Code size") :], end="", flush=True)
    return 0


def entry(frozen: dict, script: str) -> None:
    """``main`` with bad input as one line (exit 2), as pgolf's command lines report it."""
    try:
        status = main(frozen, script)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    finally:
        runtime.teardown()
    sys.exit(status)
