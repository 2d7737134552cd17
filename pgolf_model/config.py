"""Typed run configuration: one small dataclass per section (model, optim, train, quant, eval).

Every field is one command-line flag (``cli``), applied on top of a preset (``presets``). Each dataclass validates
itself on creation and raises ``ConfigError`` naming the field and the value. ``Config.to_dict`` /
``Config.from_dict`` give the JSON saved in checkpoints and artifacts.

This module is part of the artifact's counted code (it defines the model's shape), so it imports nothing from
outside the standard library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any

CODECS = ("zstd", "lzma", "brotli", "best")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the value."""


def _field(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _require(ok: bool, section: str, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{section}.{name} = {value!r}: {why}")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = _field(1024, "token ids the model predicts; set from the tokenizer when not given")
    num_layers: int = _field(9, "transformer blocks; the first half feeds U-Net skips into the second half")
    model_dim: int = _field(512, "width of the residual stream")
    num_heads: int = _field(8, "query heads per attention layer")
    num_kv_heads: int = _field(4, "key/value heads (grouped-query attention); must divide num_heads")
    mlp_mult: int = _field(2, "MLP hidden width as a multiple of model_dim")
    rope_base: float = _field(10000.0, "RoPE frequency base")
    qk_gain_init: float = _field(1.5, "initial per-head gain on the RMS-normed queries (a learned temperature)")
    logit_softcap: float = _field(30.0, "logits pass through cap*tanh(z/cap); 0 disables the cap")
    tie_embeddings: bool = _field(True, "share the input embedding with the output projection")
    tied_embed_init_std: float = _field(0.005, "init std of the token embedding")
    # Record-stack switches (../shared/research/stack.md section 6); every default is off = the baseline.
    mlp_leaky_slope: float = _field(0.0, "MLP activation leaky_relu(x, slope)^2; 0 = relu^2, the records use 0.5")
    rope_dims: int = _field(0, "partial RoPE: rotate only the first this many dims of each head; 0 = all")
    ln_scale: bool = _field(False, "scale each block's normed inputs by 1/sqrt(layer_idx + 1)")
    xsa: bool = _field(False, "XSA: remove from each head's output its component along the token's own value")
    attn_gate_width: int = _field(0, "sparse attention gate on the first this many normed input dims; 0 = off")
    smear_gate: bool = _field(False, "SmearGate on the embeddings: add a gated copy of the previous token's")
    bos_id: int = _field(1, "the tokenizer's BOS id: SmearGate never smears across it")
    parallel_from: int = _field(0, "decoder blocks with physical index >= this run two parallel lanes; 0 = off")
    loop_start: int = _field(0, "depth recurrence: first physical block of the looped range")
    loop_end: int = _field(-1, "depth recurrence: last physical block of the looped range (inclusive)")
    num_loops: int = _field(0, "depth recurrence: extra passes over blocks loop_start..loop_end; 0 = off")
    bigram_buckets: int = _field(0, "BigramHash embedding buckets added to the token embedding; 0 = off")
    bigram_dim: int = _field(128, "BigramHash embedding width, projected to model_dim")
    ve_layers: str = _field("", "value embeddings: the blocks (e.g. 9,10) whose values get a shared table; '' = off")
    ve_dim: int = _field(128, "value embedding table width, projected to the key/value width")

    def __post_init__(self) -> None:
        s = "model"
        for name in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, s, name, value, "must be a positive integer")
        _require(self.vocab_size <= 65_536, s, "vocab_size", self.vocab_size, "shards store ids as uint16 (<= 65536)")
        dim, heads, kv = self.model_dim, self.num_heads, self.num_kv_heads
        _require(dim % heads == 0, s, "model_dim", dim, f"must be divisible by num_heads = {heads}")
        _require(heads % kv == 0, s, "num_kv_heads", kv, f"must divide num_heads = {heads}")
        _require(self.head_dim % 2 == 0, s, "model_dim", self.model_dim, f"head_dim {self.head_dim} must be even")
        _require(self.rope_base > 0, s, "rope_base", self.rope_base, "must be positive")
        _require(self.logit_softcap >= 0, s, "logit_softcap", self.logit_softcap, "must be >= 0 (0 disables)")
        _require(self.tied_embed_init_std > 0, s, "tied_embed_init_std", self.tied_embed_init_std, "must be positive")
        _require(self.mlp_leaky_slope >= 0, s, "mlp_leaky_slope", self.mlp_leaky_slope, "must be >= 0")
        why = f"must be 0 or an even number <= head_dim {self.head_dim}"
        _require(self.rope_dims % 2 == 0 and 0 <= self.rope_dims <= self.head_dim, s, "rope_dims", self.rope_dims, why)
        why = f"must be in [0, model_dim {dim}]"
        _require(0 <= self.attn_gate_width <= dim, s, "attn_gate_width", self.attn_gate_width, why)
        _require(0 <= self.bos_id < self.vocab_size, s, "bos_id", self.bos_id, "must be a token id")
        why = f"must be 0 (off) or a decoder block index in [num_layers//2, {self.num_layers})"
        ok = self.parallel_from == 0 or self.num_layers // 2 <= self.parallel_from < self.num_layers
        _require(ok, s, "parallel_from", self.parallel_from, why)
        _require(self.num_loops >= 0, s, "num_loops", self.num_loops, "must be >= 0")
        if self.num_loops:
            why = f"need 0 <= loop_start <= loop_end < num_layers = {self.num_layers}"
            ok = 0 <= self.loop_start <= self.loop_end < self.num_layers
            _require(ok, s, "loop_end", (self.loop_start, self.loop_end), why)
            # A looped block would run again after the parallel lanes have started; the lanes must be last.
            why = f"the looped blocks must all come before parallel_from = {self.parallel_from}"
            ok = not self.parallel_from or self.loop_end < self.parallel_from
            _require(ok, s, "loop_end", self.loop_end, why)
        _require(self.bigram_buckets >= 0, s, "bigram_buckets", self.bigram_buckets, "must be >= 0")
        _require(self.bigram_dim > 0, s, "bigram_dim", self.bigram_dim, "must be positive")
        _require(self.ve_dim > 0, s, "ve_dim", self.ve_dim, "must be positive")
        try:
            layers = self.ve_layer_list
        except ValueError:
            layers = None
        why = f"must be distinct comma-separated block indices in [0, {self.num_layers})"
        ok = layers is not None and len(set(layers)) == len(layers) and all(0 <= i < self.num_layers for i in layers)
        _require(ok, s, "ve_layers", self.ve_layers, why)

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def ve_layer_list(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.ve_layers.split(",") if i.strip())


@dataclass(frozen=True)
class OptimConfig:
    matrix_lr: float = _field(0.04, "Muon learning rate for the 2-D weights of the blocks")
    scalar_lr: float = _field(0.04, "Adam learning rate for gains, mixes, skip weights and other small tensors")
    tied_embed_lr: float = _field(0.05, "Adam learning rate for the tied token embedding")
    embed_lr: float = _field(0.6, "Adam learning rate for the input embedding when embeddings are untied")
    head_lr: float = _field(0.008, "Adam learning rate for the output head when embeddings are untied")
    muon_momentum: float = _field(0.95, "Muon momentum after its warm-up")
    muon_momentum_start: float = _field(0.85, "Muon momentum at step 0, raised linearly to muon_momentum")
    muon_momentum_warmup_steps: int = _field(500, "steps over which Muon momentum rises; 0 = constant")
    muon_ns_steps: int = _field(5, "Newton-Schulz iterations per Muon update")
    muon_ns_coeffs: str = _field("fixed", "Newton-Schulz coefficients: fixed (3.4445, -4.775, 2.0315) or polar_express")
    muon_row_norm: bool = _field(False, "MuonEq-R: scale each row of the momentum update to unit L2 norm before NS")
    adam_beta1: float = _field(0.9, "Adam beta1")
    adam_beta2: float = _field(0.95, "Adam beta2")
    adam_eps: float = _field(1e-8, "Adam epsilon")
    grad_clip_norm: float = _field(0.0, "clip the global gradient norm to this; 0 = no clipping")
    lr_warmup_steps: int = _field(0, "linear learning-rate warm-up steps")
    warmdown_steps: int = _field(1200, "linear decay to 0 over the last this many (projected) steps")
    warmdown_frac: float = _field(0.0, "linear decay over the last this fraction of training; 0 = use warmdown_steps")
    min_lr_scale: float = _field(0.0, "floor of the warm-down's learning-rate multiplier (records: MIN_LR 0.1)")
    muon_wd: float = _field(0.0, "Muon decoupled weight decay: p <- p * (1 - lr * wd) before each update")
    embed_wd: float = _field(0.0, "Adam decoupled weight decay of the embedding tables and the untied head")
    scalar_wd: float = _field(0.0, "Adam decoupled weight decay of the gains, mixes and other small tensors")
    wd_taper_start: float = _field(0.0, "Muon weight decay tapers linearly after this fraction of training; 0 = off")
    wd_taper_final: float = _field(0.5, "Muon weight-decay multiplier reached at the end of the taper")

    def __post_init__(self) -> None:
        s = "optim"
        lrs = ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr", "adam_eps", "grad_clip_norm")
        for name in (*lrs, "muon_wd", "embed_wd", "scalar_wd", "wd_taper_final"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0")
        for name in ("min_lr_scale", "wd_taper_start"):
            _require(0 <= getattr(self, name) < 1, s, name, getattr(self, name), "must be in [0, 1)")
        _require(0 <= self.warmdown_frac <= 1, s, "warmdown_frac", self.warmdown_frac, "must be in [0, 1]")
        for name in ("muon_momentum", "muon_momentum_start", "adam_beta1", "adam_beta2"):
            _require(0 <= getattr(self, name) < 1, s, name, getattr(self, name), "must be in [0, 1)")
        for name in ("muon_momentum_warmup_steps", "lr_warmup_steps", "warmdown_steps"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0")
        _require(self.muon_ns_steps >= 1, s, "muon_ns_steps", self.muon_ns_steps, "must be >= 1")
        why = "must be one of fixed, polar_express"
        _require(self.muon_ns_coeffs in ("fixed", "polar_express"), s, "muon_ns_coeffs", self.muon_ns_coeffs, why)


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = _field(1024, "tokens per training sequence (and per validation window)")
    batch_tokens: int = _field(524_288, "tokens per optimizer step, summed over ranks and accumulation steps")
    device_batch_tokens: int = _field(65_536, "tokens per forward pass on one rank; sets gradient accumulation")
    iterations: int = _field(20_000, "maximum optimizer steps")
    max_minutes: float = _field(10.0, "wall-clock limit on training (validation excluded); 0 = none")
    val_every: int = _field(1000, "validate every this many steps (and always at the end); 0 = only at the end")
    val_tokens: int = _field(0, "score only the first this many validation targets during training; 0 = all")
    log_every: int = _field(200, "print and log the training loss every this many steps")
    checkpoint_every: int = _field(0, "save a resumable checkpoint every this many steps; 0 = only at the end")
    keep_checkpoints: int = _field(2, "how many of the newest step checkpoints to keep")
    seed: int = _field(1337, "seed for initialization and the data order")
    shuffle: bool = _field(False, "read training windows in a seeded random order instead of sequentially")
    compile: bool = _field(False, "torch.compile the model")
    compile_warmup_steps: int = _field(0, "steps run before the clock starts, then undone (compiles kernels)")
    ema_decay: float = _field(0.0, "keep an fp32 EMA of all weights (decay per step), used for eval/export; 0 = off")
    loop_after: float = _field(0.0, "depth recurrence starts at this fraction of training (time, or steps); 0 = always")
    qat_threshold: float = _field(0.0, "late QAT: fake-quantize the matrices once the lr scale is below this; 0 = off")

    def __post_init__(self) -> None:
        s = "train"
        for name in ("seq_len", "batch_tokens", "device_batch_tokens", "iterations", "keep_checkpoints"):
            _require(getattr(self, name) > 0, s, name, getattr(self, name), "must be positive")
        for name in ("max_minutes", "val_every", "val_tokens", "log_every", "checkpoint_every", "compile_warmup_steps"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0")
        _require(0 <= self.ema_decay < 1, s, "ema_decay", self.ema_decay, "must be in [0, 1)")
        _require(0 <= self.loop_after < 1, s, "loop_after", self.loop_after, "must be in [0, 1)")
        _require(0 <= self.qat_threshold <= 1, s, "qat_threshold", self.qat_threshold, "must be in [0, 1]")
        device, seq = self.device_batch_tokens, self.seq_len
        _require(device % seq == 0, s, "device_batch_tokens", device, f"must be a multiple of seq_len = {seq}")
        why = f"must be a multiple of device_batch_tokens = {device}"
        _require(self.batch_tokens % device == 0, s, "batch_tokens", self.batch_tokens, why)

    def grad_accum(self, world_size: int) -> int:
        per_step = self.device_batch_tokens * world_size
        if self.batch_tokens % per_step:
            raise ConfigError(
                f"train.batch_tokens = {self.batch_tokens} is not a multiple of device_batch_tokens x world size = "
                f"{self.device_batch_tokens} x {world_size}"
            )
        return self.batch_tokens // per_step


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization (``export``): per tensor group (``embed``, ``attn``, ``mlp``, ``other``) a width
    and a clip rule, round-to-nearest or GPTQ, optional LQER, optional budget-driven widths."""

    bits: int = _field(8, "bits per quantized weight (symmetric, one scale per row); the default of every group")
    embed_bits: int = _field(0, "bits of the embedding / untied head matrices; 0 = quant.bits")
    attn_bits: int = _field(0, "bits of the attention matrices; 0 = quant.bits")
    mlp_bits: int = _field(0, "bits of the MLP matrices; 0 = quant.bits")
    clip_quantile: float = _field(0.9999984, "per-row clip at this quantile of |w| before scaling (without SDClip)")
    sdclip_k: float = _field(0.0, "SDClip: row scale = k * std(row) / qmax; 0 = clip at clip_quantile instead")
    embed_sdclip_k: float = _field(0.0, "SDClip k of the embedding matrices; 0 = quant.sdclip_k")
    attn_sdclip_k: float = _field(0.0, "SDClip k of the attention matrices; 0 = quant.sdclip_k")
    mlp_sdclip_k: float = _field(0.0, "SDClip k of the MLP matrices; 0 = quant.sdclip_k")
    method: str = _field("rtn", "rtn (round to nearest) or gptq (Hessians from self-generated calibration)")
    allocate: bool = _field(False, "choose each group's bits in int5..int8 to fit the byte budget (ignores *bits)")
    lqer_rank: int = _field(0, "LQER: rank of the error correction of the 3 worst matrices; 0 = off")
    calib_seqs: int = _field(64, "self-generated calibration sequences (for gptq or allocate)")
    calib_seq_len: int = _field(0, "calibration sequence length; 0 = train.seq_len")
    calib_batch: int = _field(8, "calibration sequences per forward pass")
    keep_float_max_numel: int = _field(65_536, "tensors with at most this many elements stay float16")
    codec: str = _field("zstd", "weight compressor: zstd (level 22), lzma, brotli, or best (smallest of the three)")

    def __post_init__(self) -> None:
        s = "quant"
        _require(2 <= self.bits <= 8, s, "bits", self.bits, "must be in [2, 8]")
        for name in ("embed_bits", "attn_bits", "mlp_bits"):
            value = getattr(self, name)
            _require(value == 0 or 2 <= value <= 8, s, name, value, "must be 0 (= quant.bits) or in [2, 8]")
        _require(0 < self.clip_quantile <= 1, s, "clip_quantile", self.clip_quantile, "must be in (0, 1]")
        for name in ("sdclip_k", "embed_sdclip_k", "attn_sdclip_k", "mlp_sdclip_k"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0 (0 = no SDClip)")
        _require(self.method in ("rtn", "gptq"), s, "method", self.method, "must be rtn or gptq")
        _require(self.lqer_rank >= 0, s, "lqer_rank", self.lqer_rank, "must be >= 0 (0 = off)")
        for name in ("calib_seqs", "calib_batch"):
            _require(getattr(self, name) > 0, s, name, getattr(self, name), "must be positive")
        _require(self.calib_seq_len >= 0, s, "calib_seq_len", self.calib_seq_len, "must be >= 0 (0 = train.seq_len)")
        _require(self.keep_float_max_numel >= 0, s, "keep_float_max_numel", self.keep_float_max_numel, "must be >= 0")
        _require(self.codec in CODECS, s, "codec", self.codec, f"must be one of {', '.join(CODECS)}")

    def bits_of(self, group: str) -> int:
        return getattr(self, f"{group}_bits", 0) or self.bits

    def sdclip_k_of(self, group: str) -> float:
        return getattr(self, f"{group}_sdclip_k", 0.0) or self.sdclip_k


TTT_MODES = ("none", "full", "lora", "phased")
LORA_TARGETS = ("q", "k", "v", "o", "mlp")


@dataclass(frozen=True)
class EvalConfig:
    """How the validation split is scored: window stride and score-first test-time training
    (``pgolf_model.evaluation.ttt`` has each mode and its record; the LoRA and global-SGD defaults are the 1.0611
    record's)."""

    stride: int = _field(0, "sliding-window stride in tokens (the records: 64); 0 = non-overlapping windows")
    seq_len: int = _field(0, "evaluation window and TTT context in tokens; 0 = train.seq_len")
    ttt: str = _field("none", "score-first test-time training: none, full, lora or phased")
    seed: int = _field(0, "seed of the LoRA adapters' initialization")
    full_lr: float = _field(0.002, "full TTT: SGD learning rate, cosine to 0 over the chunks")
    full_momentum: float = _field(0.9, "full TTT: SGD momentum")
    full_epochs: int = _field(3, "full TTT: passes over each scored chunk")
    full_chunk_tokens: int = _field(32_768, "full TTT: targets per chunk (score it, then train on it)")
    full_batch_seqs: int = _field(32, "full TTT: sequences of seq_len per SGD step")
    full_grad_clip: float = _field(1.0, "full TTT: gradient norm clip; 0 = none")
    lora_rank: int = _field(80, "LoRA TTT: adapter rank")
    lora_alpha: float = _field(144.0, "LoRA TTT: adapter output scale is alpha / rank")
    lora_targets: str = _field("q,k,v,o,mlp", "LoRA TTT: adapted modules besides the head, from q,k,v,o,mlp")
    lora_lr: float = _field(1e-4, "LoRA TTT: AdamW learning rate")
    lora_beta1: float = _field(0.0, "LoRA TTT: AdamW beta1")
    lora_beta2: float = _field(0.99, "LoRA TTT: AdamW beta2")
    lora_eps: float = _field(1e-10, "LoRA TTT: AdamW epsilon")
    lora_weight_decay: float = _field(0.5, "LoRA TTT: AdamW decoupled weight decay")
    lora_chunk_tokens: int = _field(48, "LoRA TTT: targets per chunk (score it, then one step on it)")
    lora_batch_docs: int = _field(64, "LoRA TTT: documents adapted side by side, one adapter set each")
    lora_warm_start_a: bool = _field(True, "LoRA TTT: keep A between document batches (only B is zeroed)")
    phased_prefix_docs: int = _field(2500, "phased TTT: documents scored before the last global SGD phase")
    phased_phases: int = _field(3, "phased TTT: global SGD phases, at evenly spaced document counts")
    global_lr: float = _field(0.001, "phased TTT: global SGD learning rate, cosine to 0 over the chunks")
    global_momentum: float = _field(0.9, "phased TTT: global SGD momentum")
    global_epochs: int = _field(1, "phased TTT: global SGD passes")
    global_chunk_tokens: int = _field(32_768, "phased TTT: targets per global SGD chunk (one cosine step each)")
    global_batch_seqs: int = _field(32, "phased TTT: sequences of seq_len per global SGD step")
    global_grad_clip: float = _field(1.0, "phased TTT: gradient norm clip; 0 = none")

    def __post_init__(self) -> None:
        s = "eval"
        _require(self.ttt in TTT_MODES, s, "ttt", self.ttt, f"must be one of {', '.join(TTT_MODES)}")
        for name in ("stride", "seq_len", "full_epochs", "global_epochs", "phased_prefix_docs"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0")
        positive = ("full_chunk_tokens", "full_batch_seqs", "lora_rank", "lora_chunk_tokens", "lora_batch_docs")
        for name in (*positive, "phased_phases", "global_chunk_tokens", "global_batch_seqs"):
            _require(getattr(self, name) > 0, s, name, getattr(self, name), "must be positive")
        floats = ("full_lr", "full_momentum", "full_grad_clip", "lora_alpha", "lora_lr", "lora_eps")
        for name in (*floats, "lora_weight_decay", "global_lr", "global_momentum", "global_grad_clip"):
            _require(getattr(self, name) >= 0, s, name, getattr(self, name), "must be >= 0")
        for name in ("lora_beta1", "lora_beta2"):
            _require(0 <= getattr(self, name) < 1, s, name, getattr(self, name), "must be in [0, 1)")
        bad = sorted(set(self.lora_target_list) - set(LORA_TARGETS))
        why = f"unknown target(s) {', '.join(bad)}; choose from {','.join(LORA_TARGETS)}"
        _require(not bad, s, "lora_targets", self.lora_targets, why)

    @property
    def lora_target_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())


SECTIONS = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "quant": QuantConfig,
    "eval": EvalConfig,
}


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> Config:
        unknown = sorted(set(data) - set(SECTIONS) - {"preset"})
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}")
        parts = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            known = {f.name for f in fields(section_cls)}
            bad = sorted(set(values) - known)
            if bad:
                raise ConfigError(f"{where}: unknown field(s) {', '.join(f'{name}.{b}' for b in bad)}")
            parts[name] = section_cls(**values)
        return cls(**parts, preset=data.get("preset", "custom"))

    def override(self, changes: dict[str, Any]) -> Config:
        """Apply ``{"model.num_layers": 11, ...}``; each section is re-validated."""
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            section, _, name = key.partition(".")
            if section not in SECTIONS or name not in {f.name for f in fields(SECTIONS[section])}:
                raise ConfigError(f"unknown config field {key!r}")
            by_section.setdefault(section, {})[name] = value
        return replace(self, **{s: replace(getattr(self, s), **v) for s, v in by_section.items()})
