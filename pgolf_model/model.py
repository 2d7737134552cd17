"""The GPT: the challenge baseline's architecture, written so the record stack's switches slot in.

Notable features (the 2026-03-17 naive baseline, 1.2244 BPB; docs/records.md):
- weightless RMSNorm before attention, before the MLP, on the embeddings and before the head;
- rotary position embeddings (RoPE, base 1e4) on RMS-normed queries and keys, with a learned per-head query gain;
- grouped-query attention through ``F.scaled_dot_product_attention`` (8 query heads share 4 KV heads);
- ReLU^2 MLP (from modded-nanogpt, https://arxiv.org/abs/2109.08668);
- per-block residual mix with the embedding stream x0 and per-channel output scales;
- U-Net skips: the first half of the layer sequence pushes its outputs, the second half pops them in reverse;
- tied input/output embeddings and a tanh logit soft-cap (Gemma 2, cap 30).

Record-stack switches (``ModelConfig``, all off by default; docs/records.md has each one's record): LeakyReLU(0.5)^2,
partial RoPE, LN scale, XSA (on every block, the last N or a list), attention in chosen blocks only (MLP-only blocks
elsewhere), sparse attention gate, BOS-fixed SmearGate, BigramHash, value embeddings, parallel residual lanes (the
first lane block's skip into lane 0 only, as the 1.0611 record), depth recurrence, sigmoid-gated U-Net skips,
orthogonal init; from the 2026-03-24 ternary record, ternary / binary block matrices
(``lowbit.py``), a factored embedding and YaRN. An optional part is a small module (``SmearGate``, ``BigramHash``,
``ValueEmbeddings``, ``LaneMix``, ``FactoredEmbedding``) or ``None`` when off; each initializes its own tensors from
the constants below.
The blocks' matrices are ``Linear`` layers that late QAT (``training/qat.py``) can switch to fake-quantized weights.

The layer sequence is lists of physical block indices (``encoder_layers``, ``decoder_layers``, ``lane_layers``),
rebuilt by ``set_looping``, so depth recurrence is a different list, not a rewrite. Parameters live in fp32 (with
``embed_bf16`` the embedding tables in bf16, as the baseline and the records keep them); on CUDA the training loop
runs the forward pass under bf16 autocast.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Documents, causal_attention, document_starts, documents, use_varlen
from .config import ModelConfig
from .layers import MLP, Linear, linear_init_, lm_loss, rms_norm, shallow, softcap_logits
from .lowbit import LowBit
from .quant import TensorRole

# Initial values, each from the record that introduced the tensor (docs/records.md).
ATTN_GATE_SCALE = 0.5  # sparse attention gate: sigmoid(0.5 * W x), W = 0 at init, so every head starts at 1/2
SMEAR_WIDTH = 12  # SmearGate reads the first 12 embedding dims; its weights and lambda start at 0 (identity)
BIGRAM_SCALE = 0.05  # BigramHash output scale; its table starts at 0
VE_STD, VE_SCALE = 0.01, 0.1  # value embedding table init std and shared output scale
LANE_DECAY = 1.1  # parallel lanes: each lane's residual multiplier; the four lane mixes start at 1


def lookup(table: nn.Embedding, idx: Tensor) -> Tensor:
    """``table``'s rows of ``idx``; in fp32 when no autocast runs, where a bf16 table (``embed_bf16``) meets fp32
    weights."""
    e = table(idx)
    return e if torch.is_autocast_enabled(e.device.type) else e.float()


def orthogonal_init_(weight: Tensor) -> None:
    """Orthonormal rows (or columns, for a tall matrix), gain 1: ``model.ortho_init``."""
    nn.init.orthogonal_(weight, gain=1.0)


class Rotary(nn.Module):
    """Rotary position embedding on the first ``rot_dim`` channels of each head (all of them in the baseline)."""

    def __init__(self, rot_dim: int, base: float, yarn_factor: float = 1.0) -> None:
        super().__init__()
        self.rot_dim = rot_dim
        pair = torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim
        inv_freq = 1.0 / (base**pair)
        if yarn_factor != 1.0:
            # YaRN as the 2026-03-24 ternary record has it: the fastest quarter of the pairs is kept, the slower ones
            # are divided by up to yarn_factor along a linear ramp, so positions past the training length map into
            # angles the slow channels have seen.
            ramp = torch.clamp((pair - 0.25) / 0.75, 0.0, 1.0)
            inv_freq = inv_freq / (ramp * (yarn_factor - 1.0) + 1.0)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate channel pairs (i, i + rot_dim/2) of ``x`` (B, H, T, D) by the angles of positions ``offset`` on."""
        t = torch.arange(offset, offset + x.size(-2), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, rot_dim/2); recomputed per call, cheap and compile-friendly
        cos, sin = freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)
        half = self.rot_dim // 2
        x1, x2, rest = x[..., :half], x[..., half : self.rot_dim], x[..., self.rot_dim :]
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


class KVCache:
    """One virtual layer's keys (rotated) and values (B, Hkv, L, D) of the tokens decoded so far (``GPT.decode``)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The cached keys and values followed by the new ones ``k``, ``v``, which the cache now holds too."""
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = Linear(cfg.model_dim, cfg.model_dim)
        self.c_k = Linear(cfg.model_dim, kv_dim)
        self.c_v = Linear(cfg.model_dim, kv_dim)
        self.proj = Linear(cfg.model_dim, cfg.model_dim)
        # With q and k RMS-normed, attention logits are bounded; this learned per-head gain is the temperature.
        self.qk_gain_init = cfg.qk_gain_init
        self.q_gain = nn.Parameter(torch.empty(cfg.num_heads))
        # Partial RoPE (records from 2026-03-21): the unrotated dims attend by content regardless of distance.
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base, cfg.yarn_factor)
        self.xsa = cfg.has_xsa(layer_idx)
        self.ortho_init = cfg.ortho_init
        # Sparse attention gate (docs/records.md, attention gate): a per-head sigmoid gate read from a few input dims.
        width = cfg.attn_gate_width
        self.gate = nn.Parameter(torch.empty(cfg.num_heads, width)) if width else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for lin in (self.c_q, self.c_k, self.c_v, self.proj):
            # Orthogonal Q, K, V (records from 2026-03-19 OrthoInit to the 1.0611 record's _init_weights).
            (orthogonal_init_ if self.ortho_init and lin is not self.proj else linear_init_)(lin.weight)
        self.proj.weight.zero_()  # the block starts as the identity (drawn first, as the baseline's RNG stream is)
        self.q_gain.fill_(self.qk_gain_init)
        if self.gate is not None:
            self.gate.zero_()

    def forward(
        self, x: Tensor, ve: Tensor | None = None, docs: Documents | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """``ve`` (B, T, Hkv * D): a value embedding added to the values (and so seen by XSA too); ``docs``: attend
        within each document only (``model.doc_masked``); ``cache``: ``x`` follows the cached tokens, at positions
        from the cache's length on, and ``docs.mask`` (B or 1, 1, T, L + T) says which keys each query sees."""
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.c_v(x)
        if ve is not None:
            v = v + ve
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        offset = cache.length if cache is not None else 0
        q, k = self.rotary(rms_norm(q), offset), self.rotary(rms_norm(k), offset)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        keys, values = (k, v) if cache is None else cache.extend(k, v)  # XSA below: the new tokens' own values only
        y = causal_attention(q, keys, values, docs)
        if self.xsa:
            # XSA: attention tends to copy the token's own value back; remove that direction so the layer adds
            # only information from other tokens. Head h uses KV group h // (H / Hkv), as in the GQA attention.
            v_hat = F.normalize(v, dim=-1).repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            y = y - (y * v_hat).sum(-1, keepdim=True) * v_hat
        if self.gate is not None:
            width = self.gate.size(1)
            g = torch.sigmoid(ATTN_GATE_SCALE * F.linear(x[..., :width], self.gate.to(x.dtype)))  # (B, T, H)
            y = y * g.transpose(1, 2).unsqueeze(-1)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class LaneMix(nn.Module):
    """Parallel residual lanes (docs/records.md, parallel residuals): lane i becomes ``decay[i] * lane_i +
    mix[i, 0] * attn + mix[i, 1] * mlp``."""

    def __init__(self) -> None:
        super().__init__()
        self.decay = nn.Parameter(torch.empty(2))
        self.mix = nn.Parameter(torch.empty(2, 2))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.decay.fill_(LANE_DECAY)
        self.mix.fill_(1.0)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        # An attention-free block (``model.attn_layers``): "attention only in the last layers" (docs/records.md, XSA).
        self.attn = CausalSelfAttention(cfg, layer_idx) if cfg.has_attention(layer_idx) else None
        self.mlp = MLP(cfg.model_dim, cfg.mlp_hidden(layer_idx), cfg.mlp_leaky_slope)
        self.ortho_init = cfg.ortho_init
        self.attn_scale = nn.Parameter(torch.empty(cfg.model_dim)) if self.attn is not None else None
        self.mlp_scale = nn.Parameter(torch.empty(cfg.model_dim))
        # x <- mix[0] * x + mix[1] * x0: each block may pull the embedding stream back in (init: identity).
        self.resid_mix = nn.Parameter(torch.empty(2, cfg.model_dim))
        # Layer-norm scaling: deeper blocks see smaller inputs, so their updates stay proportionate to the stream.
        self.in_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0
        self.lanes = LaneMix() if cfg.parallel_from and layer_idx >= cfg.parallel_from else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.attn is not None:
            self.attn.reset_parameters()
            self.attn_scale.fill_(1.0)
        self.mlp.reset_parameters()
        if self.ortho_init:  # the MLP-up orthogonal too (the 1.0611 record's _init_weights)
            orthogonal_init_(self.mlp.fc.weight)
        self.mlp_scale.fill_(1.0)
        self.resid_mix[0].fill_(1.0)
        self.resid_mix[1].fill_(0.0)
        if self.lanes is not None:
            self.lanes.reset_parameters()

    def norm(self, x: Tensor) -> Tensor:
        return rms_norm(x) * self.in_scale if self.in_scale != 1.0 else rms_norm(x)

    def forward(
        self,
        x: Tensor,
        x0: Tensor,
        ve: Tensor | None = None,
        docs: Documents | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        if self.attn is not None:
            x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm(x), ve=ve, docs=docs, cache=cache)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm(x))

    def forward_lanes(
        self,
        lane0: Tensor,
        lane1: Tensor,
        x0: Tensor,
        ve: Tensor | None,
        docs: Documents | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Two-lane block: attention reads lane 0 (mixed with x0), the MLP reads lane 1, both write to both lanes."""
        mix = self.resid_mix.to(lane0.dtype)
        a = self.attn(self.norm(mix[0] * lane0 + mix[1] * x0), ve=ve, docs=docs, cache=cache)
        a = self.attn_scale.to(lane0.dtype) * a
        m = self.mlp_scale.to(lane1.dtype) * self.mlp(self.norm(lane1))
        r, p = self.lanes.decay.to(lane0.dtype), self.lanes.mix.to(lane0.dtype)
        return r[0] * lane0 + p[0, 0] * a + p[0, 1] * m, r[1] * lane1 + p[1, 0] * a + p[1, 1] * m


class SmearGate(nn.Module):
    """BOS-fixed SmearGate (docs/records.md, SmearGate): ``e_t += lam * sigmoid(w . e_t[:12]) * e_{t-1}``, except
    where token t is BOS, so a document never reads the one before it."""

    def __init__(self, bos_id: int) -> None:
        super().__init__()
        self.bos_id = bos_id
        self.weight = nn.Parameter(torch.empty(SMEAR_WIDTH))
        self.lam = nn.Parameter(torch.empty(()))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.zero_()
        self.lam.zero_()

    def forward(self, e: Tensor, idx: Tensor, prev: Tensor | None = None) -> Tensor:
        """``prev`` (B, 1, C): the pre-smear embedding of the token before ``idx[:, 0]`` (decoding), which is then
        smeared as the tail of ``prev, e``; without it the first position has no previous token and stays as it
        is."""
        if prev is not None:  # the placeholder id before idx is never read: position 0 is not smeared
            return self(torch.cat((prev, e), dim=1), F.pad(idx, (1, 0)))[:, 1:]
        gate = torch.sigmoid(e[:, 1:, :SMEAR_WIDTH] @ self.weight.to(e.dtype)).unsqueeze(-1)
        keep = (idx[:, 1:] != self.bos_id).unsqueeze(-1).to(e.dtype)
        return torch.cat((e[:, :1], e[:, 1:] + self.lam.to(e.dtype) * gate * e[:, :-1] * keep), dim=1)


class BigramHash(nn.Module):
    """BigramHash (records 2026-03-20 .. 04-04; docs/records.md): an embedding of the hashed (previous, current)
    token pair, projected to the stream and added to the token embedding. With ``bos_id`` (``model.doc_masked``) a
    BOS has no previous token either, as at a row's start, so no document reads the one before it."""

    def __init__(self, buckets: int, dim: int, model_dim: int, bos_id: int | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(buckets, dim)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        self.scale = nn.Parameter(torch.empty(()))
        self.bos_id = bos_id

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.zeros_(self.emb.weight)
        linear_init_(self.proj.weight)
        self.scale.fill_(BIGRAM_SCALE)

    def forward(self, idx: Tensor, prev: Tensor | None = None) -> Tensor:
        """``prev`` (B, 1): the token before ``idx[:, 0]`` (decoding); without it position 0 has its own bucket."""
        buckets = self.emb.num_embeddings
        before = F.pad(idx[:, :-1], (1, 0)) if prev is None else torch.cat((prev, idx[:, :-1]), dim=1)
        h = torch.bitwise_xor(36313 * idx, 27191 * before) % (buckets - 1)
        if prev is None:
            h[:, 0] = buckets - 1  # position 0 has no previous token
        if self.bos_id is not None:
            h = torch.where(idx == self.bos_id, buckets - 1, h)
        return self.scale * self.proj(lookup(self.emb, h))


class ValueEmbeddings(nn.Module):
    """Value embeddings (VE128, 2026-03-25 record; docs/records.md): one table shared by the listed blocks, each with
    its own scale, re-injects token identity into the attention values of late layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.layers = cfg.ve_layers
        self.emb = nn.Embedding(cfg.vocab_size, cfg.ve_dim)
        self.proj = nn.Linear(cfg.ve_dim, kv_dim, bias=False) if cfg.ve_dim != kv_dim else None
        self.scale = nn.Parameter(torch.empty(()))
        self.layer_scales = nn.Parameter(torch.empty(len(self.layers)))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.emb.weight, mean=0.0, std=VE_STD)
        if self.proj is not None:
            nn.init.orthogonal_(self.proj.weight)
        self.scale.fill_(VE_SCALE)
        self.layer_scales.fill_(1.0)

    def forward(self, idx: Tensor) -> dict[int, Tensor]:
        """``{physical block: (B, T, Hkv * D)}``: the shared value embedding times each listed block's scale."""
        h = lookup(self.emb, idx)
        if self.proj is not None:
            h = self.proj(h)
        h = h * self.scale.to(h.dtype)
        scales = self.layer_scales.to(h.dtype)
        return {layer: h * scales[k] for k, layer in enumerate(self.layers)}


class FactoredEmbedding(nn.Module):
    """A token table narrower than the stream (the 2026-03-24 ternary record's 8192 x 254, EMBED_DIM): ``up`` maps
    its rows to the stream, ``down`` maps the final hidden state back to the table's width for the tied head."""

    def __init__(self, embed_dim: int, model_dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(embed_dim, model_dim, bias=False)
        self.down = nn.Linear(model_dim, embed_dim, bias=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        linear_init_(self.up.weight)
        linear_init_(self.down.weight)


class SlotValues(nn.Module):
    """The value embeddings keyed by virtual layer instead of physical block (a LoRA TTT view's, ``lora_sites``)."""

    def __init__(self, inner, order: list[int]) -> None:
        super().__init__()
        self.inner, self.order = inner, order

    def forward(self, idx: Tensor) -> dict[int, Tensor]:
        ves = self.inner(idx)
        return {slot: ves[p] for slot, p in enumerate(self.order) if p in ves}


class DecodeState:
    """What ``GPT.decode`` keeps between calls: a ``KVCache`` per virtual layer (a looped block has one per pass),
    the number of tokens fed, the last token (BigramHash) and its pre-smear embedding (SmearGate), and with
    ``doc_masked`` every fed token's document number within its row."""

    def __init__(self, num_layers: int) -> None:
        self.layers = [KVCache() for _ in range(num_layers)]
        self.length = 0
        self.last_token: Tensor | None = None  # (B, 1)
        self.last_embed: Tensor | None = None  # (B, 1, C)
        self.docs: Tensor | None = None  # (B, length)

    def attention_mask(self, idx: Tensor, bos_id: int, doc_masked: bool) -> Documents:
        """The keys (cached, then ``idx``'s) each token of ``idx`` (B, T) attends to: the earlier ones and itself, of
        its own document with ``doc_masked`` (since its row's last BOS; a row's first token starts a document, as in
        ``attention.document_starts``). Records ``idx``'s documents."""
        T, L = idx.size(1), self.length
        keys = torch.arange(L + T, device=idx.device)
        mask = keys[None, :] <= L + torch.arange(T, device=idx.device)[:, None]  # (T, L + T)
        if not doc_masked:
            return Documents(mask[None, None], None, L + T)
        starts = document_starts(idx, bos_id) if L == 0 else idx == bos_id
        last = self.docs[:, -1:] if L else torch.zeros_like(idx[:, :1])
        docs = last + torch.cumsum(starts, dim=1)
        self.docs = docs if L == 0 else torch.cat((self.docs, docs), dim=1)
        same = docs[:, :, None] == self.docs[:, None, :]  # (B, T, L + T)
        return Documents((same & mask)[:, None], None, L + T)


class GPT(nn.Module):
    """The model interface (``pgolf_model.registry``) for ``model.arch gpt``."""

    Config = ModelConfig
    counted_modules = ("pgolf_model.model", "pgolf_model.attention", "pgolf_model.layers", "pgolf_model.softcap_ce")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # the modules' own default inits: init_weights draws everything
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim or cfg.model_dim)
            self.factored = FactoredEmbedding(cfg.embed_dim, cfg.model_dim) if cfg.embed_dim else None
            self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
            if cfg.lowbit != "none":  # ternary / binary block matrices from step 0 (lowbit.py)
                for m in self.blocks.modules():
                    if isinstance(m, Linear):
                        m.weight_quant = LowBit(cfg.lowbit, cfg.lowbit_group)
            self.smear = SmearGate(cfg.bos_id) if cfg.smear_gate else None
            self.bigram = None
            if cfg.bigram_buckets:
                bos = cfg.bos_id if cfg.doc_masked else None
                self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, cfg.model_dim, bos)
            self.value_embeds = ValueEmbeddings(cfg) if cfg.ve_layers else None
            self.set_looping(True)
            self.skip_weights = nn.Parameter(torch.empty(len(self.encoder_layers), cfg.model_dim))
            # Sigmoid-gated skips (the 1.0611 record's skip_gates, SKIP_GATES_ENABLED): 8 x 512 = 4,096 there.
            self.skip_gates = nn.Parameter(torch.empty_like(self.skip_weights)) if cfg.skip_gates else None
            self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
            # AsymLogit (PR #1923, from modded-nanogpt PR #181): caps for positive and negative logits.
            self.logit_caps = nn.Parameter(torch.empty(2)) if cfg.asym_softcap else None
        self.init_weights()
        if cfg.embed_bf16:
            self._cast_as_records()

    @torch.no_grad()
    def _cast_as_records(self) -> None:
        """The records' ``model.bfloat16()`` followed by their ``restore_fp32_params`` (the baseline's cast is the
        same): every tensor starts from its bf16-rounded value, and the embedding tables (the token table, and
        BigramHash's and the value embeddings' when present; no ``CastedLinear``, no control tensor there) stay in
        bf16 and train so; every other tensor goes back to fp32. Of the baseline's tensors only the matrices change
        value (ones, zeros and its query gain are exact in bf16)."""
        for p in self.parameters():
            p.copy_(p.bfloat16())
        for table in self.embedding_tables():
            table.to(torch.bfloat16)

    def embedding_tables(self) -> list[nn.Embedding]:
        """The lookup tables: the token embedding, and BigramHash's and the value embeddings' tables when on."""
        return [self.tok_emb, *(part.emb for part in (self.bigram, self.value_embeds) if part is not None)]

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialization, as the baseline, each optional part by its own ``reset_parameters``.

        The draws follow the baseline's own order (its modules' constructors, then its ``_init_weights``;
        records/track_10min_16mb/2026-03-17_NaiveBaseline), so a seeded ``baseline`` starts from the official run's
        weights: N(0, 1) for ``tok_emb`` (nn.Embedding's), then per block c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj
        (nn.Linear's U(+-1/sqrt(fan_in)), the projections drawn before they are zeroed), then an untied ``lm_head``'s,
        then, when tied, ``tok_emb`` again with N(0, tied_embed_init_std^2). The record stack's parts draw after.

        | tensor                                  | init                                                 |
        |-----------------------------------------|------------------------------------------------------|
        | tok_emb (tied / untied)                 | N(0, tied_embed_init_std^2) / N(0, 1)                |
        | c_q, c_k, c_v, mlp.fc, bigram.proj      | U(-1/sqrt(fan_in), 1/sqrt(fan_in))                   |
        | c_q, c_k, c_v, mlp.fc with ortho_init   | orthogonal, gain 1 (the 1.0611 record)               |
        | attn.proj, mlp.proj, lm_head            | 0 (each block starts as the identity)                |
        | q_gain / scales / resid_mix / skips     | qk_gain_init / 1 / (1, 0) / 1                        |
        | attn.gate, smear, bigram.emb            | 0                                                    |
        | skip_gates                              | 0 (sigmoid 1/2; the 1.0611 record)                   |
        | bigram.scale, lanes.decay / lanes.mix   | BIGRAM_SCALE / LANE_DECAY / 1                        |
        | value_embeds.emb / .proj / .scale       | N(0, VE_STD^2) / orthogonal / VE_SCALE (2026-03-25)  |
        | factored.up / .down                     | U(-1/sqrt(fan_in), 1/sqrt(fan_in))                   |
        | logit_caps (AsymLogit)                  | logit_softcap, both                                  |
        """
        nn.init.normal_(self.tok_emb.weight)
        for block in self.blocks:
            block.reset_parameters()
        if self.lm_head is not None:
            linear_init_(self.lm_head.weight)
            self.lm_head.weight.zero_()
        else:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        self.skip_weights.fill_(1.0)
        if self.skip_gates is not None:
            self.skip_gates.zero_()  # sigmoid(0) = 1/2: the stream and the weighted skip start at equal shares
        if self.logit_caps is not None:
            self.logit_caps.fill_(self.cfg.logit_softcap)
        for part in (self.smear, self.bigram, self.value_embeds, self.factored):
            if part is not None:
                part.reset_parameters()

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by optimizer group: ``matrix`` (Muon), ``embed``, ``head``, ``scalar`` (Adam). The BigramHash
        and value embedding tables are ``embed``, their projections ``scalar``, as in the 2026-03-25 record (and so
        are a factored embedding's ``up`` and ``down``).

        Every parameter is in exactly one group (asserted), so a new tensor must be placed here on purpose.
        """
        matrix_ids = {id(m.weight) for block in self.blocks for m in block.modules() if isinstance(m, nn.Linear)}
        tables = {id(part.emb.weight) for part in (self.bigram, self.value_embeds) if part is not None}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
        for name, p in self.named_parameters():
            if id(p) in matrix_ids:
                groups["matrix"].append((name, p))
            elif p is self.tok_emb.weight or id(p) in tables:
                groups["embed"].append((name, p))
            elif self.lm_head is not None and p is self.lm_head.weight:
                groups["head"].append((name, p))
            else:
                groups["scalar"].append((name, p))
        assert sum(len(g) for g in groups.values()) == len(list(self.parameters())), "a parameter is in two groups"
        return groups

    def set_looping(self, on: bool) -> None:
        """The virtual layer sequence as lists of physical block indices: ``encoder_layers`` (their outputs feed the
        decoder's skips in reverse), then ``decoder_layers`` and ``lane_layers`` (the parallel blocks, always last).

        With depth recurrence on, blocks loop_start..loop_end run 1 + num_loops times (the record: 3,4,5 three
        times in 11 blocks gives 17 virtual layers); the first half of the sequence is the encoder either way.
        """
        cfg = self.cfg
        order = list(range(cfg.num_layers))
        if on and cfg.num_loops:
            looped = list(range(cfg.loop_start, cfg.loop_end + 1)) * (1 + cfg.num_loops)
            order = order[: cfg.loop_start] + looped + order[cfg.loop_end + 1 :]
        half = len(order) // 2
        # Config validation puts every lane block after the loops and in the second half, so they end the sequence.
        lanes = [i for i in order[half:] if self.blocks[i].lanes is not None]
        assert order[len(order) - len(lanes) :] == lanes, f"lane blocks {lanes} do not end the layer order {order}"
        self.looping = on
        self.encoder_layers = order[:half]
        self.decoder_layers, self.lane_layers = order[half : len(order) - len(lanes)], lanes

    def embed(self, idx: Tensor, state: DecodeState | None = None) -> Tensor:
        """x0: the normed token embedding, after the optional BigramHash and SmearGate; with a decoding ``state``,
        ``idx`` follows its last token (which it is then updated to)."""
        e = lookup(self.tok_emb, idx)
        if self.factored is not None:
            e = self.factored.up(e)
        last_token, last_embed = (state.last_token, state.last_embed) if state is not None else (None, None)
        if self.bigram is not None:
            e = e + self.bigram(idx, last_token).to(e.dtype)
        if state is not None:
            state.last_token, state.last_embed = idx[:, -1:], e[:, -1:]
        if self.smear is not None:
            e = self.smear(e, idx, last_embed)
        return rms_norm(e)

    def hidden(self, idx: Tensor, state: DecodeState | None = None, cu_seqlens: Tensor | None = None) -> Tensor:
        """The head's input (B, T, C) for token ids (B, T): the final normed hidden states (with a factored
        embedding, projected down to its width). With a decoding ``state`` ``idx`` follows the tokens it holds
        (attention reads their cached keys and values), and ``state`` is updated to end with ``idx``.
        ``cu_seqlens``: a doc-masked model's document bounds if known (``attention.documents``)."""
        x0 = self.embed(idx, state)
        ves = self.value_embeds(idx) if self.value_embeds is not None else {}
        if state is not None:
            docs = state.attention_mask(idx, self.cfg.bos_id, self.cfg.doc_masked)
            state.length += idx.size(1)
            caches = iter(state.layers)
        else:
            varlen = use_varlen(idx.device)
            docs = documents(idx, self.cfg.bos_id, varlen, cu_seqlens) if self.cfg.doc_masked else None
            caches = itertools.repeat(None)
        x, outs = x0, []
        for i in self.encoder_layers:
            x = self.blocks[i](x, x0, ve=ves.get(i), docs=docs, cache=next(caches))
            outs.append(x)
        # U-Net skips: decoder position j takes the weighted output of encoder position -1 - j, while there is one.
        skips = list(range(len(outs)))
        skips += [None] * (len(self.decoder_layers) + len(self.lane_layers) - len(skips))
        outs.reverse()
        for i, j in zip(self.decoder_layers, skips):
            x = self.blocks[i](self.join_skip(x, outs, j), x0, ve=ves.get(i), docs=docs, cache=next(caches))
        if not self.lane_layers:
            return self.unembed_input(rms_norm(x))
        # The stream splits into two lanes after the first lane block's skip joins it (with lane0_skip, as in the
        # 1.0611 record, after the split, into lane 0 only); later skips join lane 0.
        lane_skips = skips[len(self.decoder_layers) :]
        lane0 = lane1 = x if self.cfg.lane0_skip else self.join_skip(x, outs, lane_skips[0])
        for k, (i, j) in enumerate(zip(self.lane_layers, lane_skips)):
            if k or self.cfg.lane0_skip:
                lane0 = self.join_skip(lane0, outs, j)
            lane0, lane1 = self.blocks[i].forward_lanes(lane0, lane1, x0, ve=ves.get(i), docs=docs, cache=next(caches))
        return self.unembed_input(rms_norm(0.5 * (lane0 + lane1)))

    def join_skip(self, x: Tensor, outs: list[Tensor], j: int | None) -> Tensor:
        """``x`` joined by skip ``j`` (of the encoder outputs ``outs``, last first): ``x + w * out``, or with skip
        gates ``lerp(w * out, x, sigmoid(g))`` (the 1.0611 record); ``x`` itself when ``j`` is None."""
        if j is None:
            return x
        skip = self.skip_weights[j].to(x.dtype) * outs[j]
        if self.skip_gates is None:
            return x + skip
        return torch.lerp(skip, x, torch.sigmoid(self.skip_gates[j].to(x.dtype)))

    def unembed_input(self, x: Tensor) -> Tensor:
        """The final normed stream at the head's width: a factored embedding's ``down`` maps it to the table's."""
        return x if self.factored is None else self.factored.down(x)

    @property
    def head_weight(self) -> Tensor:
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def head(self, x: Tensor, delta: Tensor | None = None) -> Tensor:
        """Soft-capped logits in fp32 of final hidden states ``x``; ``delta`` is added before the cap."""
        if self.logit_caps is None:
            return softcap_logits(x, self.head_weight, self.cfg.logit_softcap, delta)
        return self.softcap(softcap_logits(x, self.head_weight, 0.0, delta))

    def softcap(self, z: Tensor) -> Tensor:
        """``cap * tanh(z / cap)``; with AsymLogit the cap of each sign is its own learned scalar. As shipped in PR
        #1923 the two caps never got a gradient (training ran the fused single-cap loss); here ``forward`` goes
        through this function whenever they exist, so the training loss moves them."""
        if self.logit_caps is not None:
            cap = torch.where(z >= 0, self.logit_caps[0], self.logit_caps[1])
            return cap * torch.tanh(z / cap)
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def logits(self, idx: Tensor) -> Tensor:
        """Soft-capped logits (B, T, V) in fp32."""
        return self.head(self.hidden(idx))

    def forward(
        self, idx: Tensor, targets: Tensor, reduction: str = "mean", cu_seqlens: Tensor | None = None
    ) -> Tensor:
        """Cross-entropy in nats: a scalar for ``reduction="mean"``, (B, T) for ``"none"`` (``cu_seqlens``:
        ``hidden``'s)."""
        x = self.hidden(idx, cu_seqlens=cu_seqlens)
        if self.logit_caps is None:
            return lm_loss(x, self.head_weight, targets, self.cfg.logit_softcap, reduction)
        # AsymLogit: the plain form through the learned caps (the chunked CPU loss has one fixed cap), so they train.
        loss = F.cross_entropy(self.head(x).flatten(0, 1), targets.flatten(), reduction=reduction)
        return loss if reduction != "none" else loss.view_as(targets)

    # -- the model interface's optional hooks (pgolf_model.registry) ------------------------------------------------

    def decode(self, idx: Tensor, state: DecodeState | None = None) -> tuple[Tensor, DecodeState]:
        """Logits (B, V) of the last of ``idx`` (B, T) fed on top of ``state`` (None: a fresh start), and the state
        after it (updated in place): the self-generated calibration's sampler, with a KV cache."""
        logits, state = self.decode_logits(idx, state)
        return logits[:, -1], state

    def decode_logits(self, idx: Tensor, state: DecodeState | None = None) -> tuple[Tensor, DecodeState]:
        """``decode``'s logits (B, T, V) at every position of ``idx``: ``logits`` of the whole sequence fed so far,
        at its last T positions."""
        if state is None:
            state = DecodeState(len(self.encoder_layers) + len(self.decoder_layers) + len(self.lane_layers))
        return self.head(self.hidden(idx, state)), state

    def head_input(self, idx: Tensor) -> tuple[str, Tensor]:
        """The logit matmul's weight name and its input, for that matrix's GPTQ Hessian."""
        return ("tok_emb.weight" if self.lm_head is None else "lm_head.weight"), self.hidden(idx)

    def lora_sites(self) -> tuple[nn.Module, list[dict[str, tuple[nn.Module, str, int, int]]], tuple[int, int]]:
        """Where LoRA TTT adapters attach (``evaluation.lora``): a view of the model with one block per virtual layer
        (a shallow copy sharing the physical block's parameters: with depth recurrence each pass gets its own
        adapters, as the 1.0611 record's), per virtual layer ``{target: (parent in the view, attribute, in, out)}``
        (q, k, v: the projections; o: the attention module, fed its normed input; mlp: the MLP module; an
        attention-free block has mlp only), and the head adapter's ``(in, out)``. The view's layer lists number its
        blocks; the model is not modified."""
        dim = self.cfg.model_dim
        lanes = getattr(self, "lane_layers", [])  # the model code of older artifacts has no lanes
        order = [*self.encoder_layers, *self.decoder_layers, *lanes]
        blocks, sites = [], []
        for p in order:
            attn = self.blocks[p].attn and shallow(self.blocks[p].attn)
            block = shallow(self.blocks[p], attn=attn)
            blocks.append(block)
            here = {"mlp": (block, "mlp", dim, dim)}
            if attn is not None:
                here |= {
                    "q": (attn, "c_q", dim, attn.c_q.out_features),
                    "k": (attn, "c_k", dim, attn.c_k.out_features),
                    "v": (attn, "c_v", dim, attn.c_v.out_features),
                    "o": (block, "attn", dim, dim),
                }
            sites.append(here)
        view = shallow(self, blocks=nn.ModuleList(blocks))
        if getattr(self, "value_embeds", None) is not None:
            view.value_embeds = SlotValues(self.value_embeds, order)
        elif hasattr(self, "value_embeddings"):  # the model code of older artifacts: a method
            view.value_embeddings = SlotValues(self.value_embeddings, order)
        n_enc, n_dec = len(self.encoder_layers), len(self.decoder_layers)
        view.encoder_layers = list(range(n_enc))
        view.decoder_layers = list(range(n_enc, n_enc + n_dec))
        if hasattr(self, "lane_layers"):
            view.lane_layers = list(range(n_enc + n_dec, len(order)))
        return view, sites, (self.head_weight.size(1), self.cfg.vocab_size)

    def tensor_roles(self) -> dict[str, TensorRole]:
        """Every matrix by quantization group and role: the token tables and untied head ``embed`` (tok_emb and
        lm_head also ``vocab``), the blocks' attention and MLP matrices ``attn`` and ``mlp``, any other ``other``."""
        tables = {part.emb.weight for part in (self.bigram, self.value_embeds) if part is not None}
        roles = {}
        for name, p in self.named_parameters():
            if p.ndim != 2:
                continue
            parts = name.split(".")
            layer = int(parts[1]) if parts[0] == "blocks" else None
            role = ".".join(parts[2:] if layer is not None else parts)
            if p is self.tok_emb.weight or p is self.head_weight:
                roles[name] = TensorRole("embed", role, vocab=True)
            elif any(p is t for t in tables):
                roles[name] = TensorRole("embed", role)
            else:
                group = "attn" if "attn" in parts else "mlp" if "mlp" in parts else "other"
                roles[name] = TensorRole(group, role, layer)
        return roles

    @staticmethod
    def size_step(cfg: ModelConfig, shrink: str) -> tuple[str, int]:
        """What the A/B's sizing varies: the width in steps of 2 * num_heads (the head dimension stays even, as RoPE
        needs) or the number of blocks in steps of one."""
        return ("model_dim", 2 * cfg.num_heads) if shrink == "width" else ("num_layers", 1)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of the matrix products (forward and backward, 3x the forward): 2 per weight of
        every matrix the token passes (virtual layers counted once per pass, the head included, embedding lookups
        not) and the causal attention's QK^T and AV over on average (seq_len + 1) / 2 keys."""
        cfg, layers = self.cfg, self.encoder_layers + self.decoder_layers + self.lane_layers
        dense = sum(m.weight.numel() for i in layers for m in self.blocks[i].modules() if isinstance(m, nn.Linear))
        projections = [part.proj for part in (self.bigram, self.value_embeds) if part is not None]
        dense += self.head_weight.numel() + sum(p.weight.numel() for p in projections if p is not None)
        attention = sum(self.blocks[i].attn is not None for i in layers) * 2 * cfg.model_dim * (seq_len + 1)
        return 3.0 * (2 * dense + attention)


def count_parameters(cfg: ModelConfig) -> int:
    """Parameter count without allocating (built on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """``state_dict`` names and shapes without allocating."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in GPT(cfg).state_dict().items()}
