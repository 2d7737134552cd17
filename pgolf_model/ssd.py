"""SSD: a state-space language model, the Mamba-2 layer ("state space duality") written in plain torch.

Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality" (ICML 2024, https://arxiv.org/abs/2405.21060). Where the GPT attends over every earlier position, each head
here carries a fixed-size state ``S`` (``state_dim`` x head_dim) along the sequence:

    S_t = a_t S_{t-1} + dt_t k_t v_t^T,    y_t = q_t^T S_t,    a_t = exp(-dt_t exp(A_log)),

with a per-head, per-token step ``dt_t = softplus(w_dt . x_t + b_dt)`` (the "selective" decay of Mamba, Gu & Dao
2023, https://arxiv.org/abs/2312.00752) and ``q, k, v`` (Mamba's C, B and x) projected from the normed stream, each
through a causal depthwise convolution of width ``conv_kernel`` and SiLU (Mamba's short convolution). The heads'
outputs are RMS-normed per head and gated by ``SiLU(gate(x))`` (Mamba-2's z branch; the output gate of gated linear
attention, Yang et al. 2023, https://arxiv.org/abs/2312.06635), then projected back. Each block is this mixer and the
GPT's ReLU^2 MLP, pre-norm with per-channel output scales, embeddings tied with a tanh soft-cap as the GPT's.

At a BOS token the state restarts (``a_t = 0``, and the convolution reads nothing before it), so a document never
reads the one before: what a recurrence gets for free and attention needs document masks for.

Training and scoring run the paper's chunked algorithm (its minimal SSD listing): within chunks of ``chunk_size``
positions the quadratic, attention-like form with the decay mask ``exp(segsum(log a))``, across chunks the state
recurrence. ``decode`` runs the recurrence a token at a time (the self-generated calibration's sampler);
tests/test_ssd.py checks the two against each other. The scan runs in fp32 whatever the autocast.

Why this family (issue 18): it is the recurrent, attention-free kind of model that matches Transformers per parameter
at 100M+ scale in the paper, its training is matmuls (no custom kernel: it trains on CPUs and GPUs alike), a scalar
decay per head keeps the chunked form exact in fp32 (no overflowing ratios of decays, unlike vector gates), and
generation costs O(1) per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NON_NEGATIVE, POSITIVE, POSITIVE_INT, VOCAB_LIMIT, Section, _field, _require
from .layers import MLP, Linear, linear_init_, lm_loss, rms_norm, shallow, softcap_logits
from .quant import TensorRole

# Initial values of Mamba-2's reference implementation: dt log-uniform in [DT_MIN, DT_MAX], A uniform in A_RANGE.
DT_MIN, DT_MAX = 1e-3, 1e-1
A_RANGE = (1.0, 16.0)


@dataclass(frozen=True)
class SSDConfig(Section):
    """The settings of ``model.arch ssd``."""

    arch: ClassVar[str] = "ssd"
    vocab_size: int = _field(1024, "token ids the model predicts; set from the tokenizer when not given", POSITIVE_INT)
    bos_id: int = _field(1, "the tokenizer's BOS id: the state restarts there (reset_at_bos)")
    num_layers: int = _field(9, "blocks, each an SSD mixer and an MLP", POSITIVE_INT)
    model_dim: int = _field(512, "width of the residual stream", POSITIVE_INT)
    num_heads: int = _field(
        8, "heads of the mixer; each carries a state_dim x (model_dim / num_heads) state", POSITIVE_INT
    )
    state_dim: int = _field(64, "state size per head (Mamba's d_state): the width of q and k per head", POSITIVE_INT)
    conv_kernel: int = _field(4, "width of the causal depthwise convolution on q, k, v; 0 = none", NON_NEGATIVE)
    chunk_size: int = _field(64, "positions per chunk of the chunked scan (speed only, not the result)", POSITIVE_INT)
    mlp_mult: int = _field(2, "MLP hidden width as a multiple of model_dim", POSITIVE_INT)
    mlp_leaky_slope: float = _field(0.0, "MLP leaky_relu(x, slope)^2; 0 = relu^2", NON_NEGATIVE)
    output_gate: bool = _field(True, "gate the mixer's output with SiLU(gate(x))")
    reset_at_bos: bool = _field(True, "restart the state (and the convolution) at every BOS token")
    logit_softcap: float = _field(30.0, "logits pass through cap*tanh(z/cap); 0 disables the cap", NON_NEGATIVE)
    tied_embed_init_std: float = _field(0.005, "init std of the (tied) token embedding", POSITIVE)

    def check(self) -> None:
        why = f"shards store ids as uint16 (<= {VOCAB_LIMIT})"
        _require(self.vocab_size <= VOCAB_LIMIT, "vocab_size", self.vocab_size, why)
        why = f"must be divisible by num_heads = {self.num_heads}"
        _require(self.model_dim % self.num_heads == 0, "model_dim", self.model_dim, why)
        _require(0 <= self.bos_id < self.vocab_size, "bos_id", self.bos_id, "must be a token id")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def uses_bos(self) -> bool:
        return self.reset_at_bos


def segsum(x: Tensor) -> Tensor:
    """``out[..., t, s] = x[..., s+1] + ... + x[..., t]`` for ``s <= t``, ``-inf`` above the diagonal: the log decay
    from position s to t. Summed directly, never as a difference of cumulative sums, so a ``-inf`` (a restart) stays
    exact (the paper's stable ``segsum``)."""
    ones = torch.ones(x.size(-1), x.size(-1), dtype=torch.bool, device=x.device)
    sums = x[..., :, None].expand(*x.shape, x.size(-1)).masked_fill(~torch.tril(ones, diagonal=-1), 0.0)
    return sums.cumsum(dim=-2).masked_fill(~torch.tril(ones), -math.inf)


def ssd_scan(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor, chunk: int) -> Tensor:
    """``y_t = sum_{s <= t} exp(log a_{s+1} + ... + log a_t) (q_t . k_s) v_s`` for q, k (B, T, H, N), v (B, T, H, P),
    log_a (B, T, H) (<= 0; -inf restarts), in chunks of ``chunk`` positions; (B, T, H, P) in fp32."""
    B, T, H, _ = q.shape
    pad = -T % chunk
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, log_a = (F.pad(t.float(), (0, 0) * (t.ndim - 2) + (0, pad)) for t in (q, k, v, log_a))
        c = (T + pad) // chunk
        q, k, v = (t.view(B, c, chunk, H, -1) for t in (q, k, v))
        a = log_a.view(B, c, chunk, H).permute(0, 3, 1, 2)  # (B, H, c, L)
        decay = segsum(a).exp()  # (B, H, c, L, L): from position s to t within a chunk
        # 1. within each chunk: the masked quadratic form.
        y = torch.einsum("bhcls,bcshp->bclhp", torch.einsum("bclhn,bcshn->bhcls", q, k) * decay, v)
        # 2. each chunk's own contribution to the state at its end, and 3. the state entering every chunk.
        states = torch.einsum("bclhn,bhcl,bclhp->bchnp", k, decay[..., -1, :], v)
        through = a.sum(dim=-1).exp()  # (B, H, c): the decay across a whole chunk
        state, entering = torch.zeros_like(states[:, 0]), []
        for i in range(c):
            entering.append(state)
            state = state * through[:, :, i, None, None] + states[:, i]
        # 4. each position reads the entering state, decayed from the chunk's start.
        start = a.cumsum(dim=-1).exp()  # (B, H, c, L)
        y = y + torch.einsum("bclhn,bchnp,bhcl->bclhp", q, torch.stack(entering, dim=1), start)
    return y.reshape(B, c * chunk, H, -1)[:, :T]


def causal_conv(u: Tensor, weight: Tensor, resets: Tensor | None) -> Tensor:
    """``out_t = sum_j weight[:, j] * u_{t-j}`` over the last ``weight.size(1)`` positions of ``u`` (B, T, D) that
    are in the same document as ``t`` (no BOS in ``t-j+1 .. t`` when ``resets`` marks the BOS positions)."""
    doc = resets.long().cumsum(dim=1) if resets is not None else None
    out, T = u * weight[:, 0], u.size(1)
    for j in range(1, weight.size(1)):
        shifted = F.pad(u, (0, 0, j, 0))[:, :T]
        if doc is not None:
            shifted = shifted * (doc == F.pad(doc, (j, 0), value=-1)[:, :T]).unsqueeze(-1).to(u.dtype)
        out = out + shifted * weight[:, j]
    return out


class Mixer(nn.Module):
    """The SSD mixer of one block (module docstring). ``forward`` is the chunked scan over a sequence, ``step`` the
    recurrence for one position."""

    def __init__(self, cfg: SSDConfig) -> None:
        super().__init__()
        dim, qk = cfg.model_dim, cfg.num_heads * cfg.state_dim
        self.heads, self.state_dim, self.chunk = cfg.num_heads, cfg.state_dim, cfg.chunk_size
        self.c_q, self.c_k, self.c_v = Linear(dim, qk), Linear(dim, qk), Linear(dim, dim)
        self.gate = Linear(dim, dim) if cfg.output_gate else None
        self.proj = Linear(dim, dim)
        self.conv = nn.Parameter(torch.empty(2 * qk + dim, cfg.conv_kernel)) if cfg.conv_kernel else None
        self.dt_proj = nn.Parameter(torch.empty(cfg.num_heads, dim))
        self.dt_bias = nn.Parameter(torch.empty(cfg.num_heads))
        self.A_log = nn.Parameter(torch.empty(cfg.num_heads))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for lin in (self.c_q, self.c_k, self.c_v, self.gate):
            if lin is not None:
                linear_init_(lin.weight)
        nn.init.zeros_(self.proj.weight)  # the block starts as the identity
        if self.conv is not None:
            linear_init_(self.conv)
        linear_init_(self.dt_proj)
        dt = torch.exp(torch.empty(self.heads).uniform_(math.log(DT_MIN), math.log(DT_MAX)))
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        self.A_log.copy_(torch.empty(self.heads).uniform_(*A_RANGE).log())

    def heads_of(self, u: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The convolved projections ``u`` and the normed input ``x`` -> per-head q, k, dt-scaled v and log decay."""
        qk = self.heads * self.state_dim
        q, k, v = F.silu(u).split((qk, qk, u.size(-1) - 2 * qk), dim=-1)
        dt = F.softplus(F.linear(x, self.dt_proj.to(x.dtype)) + self.dt_bias.to(x.dtype))  # (..., H)
        shape = (*x.shape[:-1], self.heads, -1)
        v = v.reshape(shape) * dt.unsqueeze(-1)
        return q.reshape(shape), k.reshape(shape), v, -dt * self.A_log.exp().to(dt.dtype)

    def out(self, y: Tensor, x: Tensor) -> Tensor:
        y = rms_norm(y).flatten(-2).to(x.dtype)  # per head
        if self.gate is not None:
            y = y * F.silu(self.gate(x))
        return self.proj(y)

    def forward(self, x: Tensor, resets: Tensor | None) -> Tensor:
        u = torch.cat((self.c_q(x), self.c_k(x), self.c_v(x)), dim=-1)
        if self.conv is not None:
            u = causal_conv(u, self.conv.to(u.dtype), resets)
        q, k, v, log_a = self.heads_of(u, x)
        if resets is not None:
            log_a = log_a.masked_fill(resets.unsqueeze(-1), -math.inf)
        return self.out(ssd_scan(q, k, v, log_a, self.chunk), x)

    def step(self, x: Tensor, reset: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple]:
        """One position: ``x`` (B, C) normed, ``reset`` (B,) True at BOS; ``state``: (the convolution's last inputs
        (B, K-1, D), the SSM state (B, H, N, P)), None at the start."""
        u = torch.cat((self.c_q(x), self.c_k(x), self.c_v(x)), dim=-1)
        keep = (~reset).to(u.dtype)
        width = self.conv.size(1) if self.conv is not None else 1
        if state is None:
            heads = self.heads, self.state_dim, self.proj.in_features // self.heads
            state = u.new_zeros(u.size(0), width - 1, u.size(1)), u.new_zeros(u.size(0), *heads, dtype=torch.float32)
        past, S = state[0] * keep[:, None, None], state[1] * keep[:, None, None, None]
        if self.conv is not None:
            w = self.conv.to(u.dtype)
            conv = u * w[:, 0] + sum(past[:, -j] * w[:, j] for j in range(1, width))
            past = torch.cat((past[:, 1:], u[:, None]), dim=1)
        else:
            conv = u
        q, k, v, log_a = self.heads_of(conv, x)
        S = S * log_a.float().exp()[..., None, None] + k.float()[..., :, None] * v.float()[..., None, :]
        y = torch.einsum("bhn,bhnp->bhp", q.float(), S)
        return self.out(y, x), (past, S)


class Block(nn.Module):
    def __init__(self, cfg: SSDConfig) -> None:
        super().__init__()
        self.mixer = Mixer(cfg)
        self.mlp = MLP(cfg.model_dim, cfg.mlp_mult * cfg.model_dim, cfg.mlp_leaky_slope)
        self.mixer_scale = nn.Parameter(torch.empty(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.empty(cfg.model_dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.mixer.reset_parameters()
        self.mlp.reset_parameters()
        self.mixer_scale.fill_(1.0)
        self.mlp_scale.fill_(1.0)

    def forward(self, x: Tensor, resets: Tensor | None) -> Tensor:
        x = x + self.mixer_scale.to(x.dtype) * self.mixer(rms_norm(x), resets)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))

    def step(self, x: Tensor, reset: Tensor, state) -> tuple[Tensor, tuple]:
        y, state = self.mixer.step(rms_norm(x), reset, state)
        x = x + self.mixer_scale.to(x.dtype) * y
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x)), state


class SSD(nn.Module):
    """The model interface (``pgolf_model.registry``) for ``model.arch ssd``."""

    Config = SSDConfig
    counted_modules = ("pgolf_model.ssd", "pgolf_model.layers", "pgolf_model.softcap_ce")
    # The GPT presets' shapes for the small ones (the others use the defaults, the baseline's 9 x 512).
    preset_sizes: ClassVar[dict[str, dict]] = {
        "tiny": {"num_layers": 4, "model_dim": 128, "num_heads": 4, "state_dim": 32},
        "smoke": {"num_layers": 2, "model_dim": 64, "num_heads": 4, "state_dim": 16, "chunk_size": 32},
    }

    def __init__(self, cfg: SSDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """tok_emb N(0, tied_embed_init_std^2); q, k, v, gate, dt_proj, conv, mlp.fc U(+-1/sqrt(fan_in)); the mixer's
        and the MLP's output projections 0 (each block starts as the identity); scales 1; dt_bias and A_log as
        Mamba-2 (``DT_MIN``, ``DT_MAX``, ``A_RANGE``)."""
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for block in self.blocks:
            block.reset_parameters()

    def resets(self, idx: Tensor) -> Tensor | None:
        return idx == self.cfg.bos_id if self.cfg.reset_at_bos else None

    def hidden(self, idx: Tensor) -> Tensor:
        """Final normed hidden states (B, T, C) for token ids (B, T)."""
        x, resets = rms_norm(self.tok_emb(idx)), self.resets(idx)
        for block in self.blocks:
            x = block(x, resets)
        return rms_norm(x)

    def head(self, x: Tensor, delta: Tensor | None = None) -> Tensor:
        return softcap_logits(x, self.tok_emb.weight, self.cfg.logit_softcap, delta)

    def logits(self, idx: Tensor) -> Tensor:
        return self.head(self.hidden(idx))

    def forward(self, idx: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        return lm_loss(self.hidden(idx), self.tok_emb.weight, targets, self.cfg.logit_softcap, reduction)

    # -- the model interface (pgolf_model.registry) -----------------------------------------------------------------

    def decode(self, idx: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """Logits (B, V) of the last of ``idx`` (B, T) fed on top of ``state`` (None: a fresh start), and the state
        after it: the recurrence, position by position."""
        state = state or [None] * len(self.blocks)
        x_all = rms_norm(self.tok_emb(idx))
        resets = self.resets(idx)
        for t in range(idx.size(1)):
            reset = resets[:, t] if resets is not None else torch.zeros_like(idx[:, t], dtype=torch.bool)
            x = x_all[:, t]
            for i, block in enumerate(self.blocks):
                x, state[i] = block.step(x, reset, state[i])
        return self.head(rms_norm(x)), state

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """``matrix``: the blocks' ``Linear`` layers (Muon); ``embed``: the token table; ``scalar``: convolutions, the
        dt projection, dt_bias, A_log and the scales (Adam)."""
        matrices = {id(m.weight) for m in self.blocks.modules() if isinstance(m, nn.Linear)}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
        for name, p in self.named_parameters():
            group = "matrix" if id(p) in matrices else "embed" if p is self.tok_emb.weight else "scalar"
            groups[group].append((name, p))
        return groups

    def tensor_roles(self) -> dict[str, TensorRole]:
        """The token table ``embed`` (``vocab``), the mixer's projections ``attn``, the MLP's ``mlp``, the
        convolution and dt projection ``other``."""
        mixing = {id(m.weight) for block in self.blocks for m in block.mixer.modules() if isinstance(m, nn.Linear)}
        roles = {"tok_emb.weight": TensorRole("embed", "tok_emb.weight", vocab=True)}
        for name, p in self.blocks.named_parameters():
            if p.ndim == 2:
                layer, rest = name.split(".", 1)
                group = "attn" if id(p) in mixing else "mlp" if rest.startswith("mlp.") else "other"
                roles[f"blocks.{name}"] = TensorRole(group, rest, int(layer))
        return roles

    def head_input(self, idx: Tensor) -> tuple[str, Tensor]:
        return "tok_emb.weight", self.hidden(idx)

    def lora_sites(self) -> tuple[nn.Module, list[dict[str, tuple[nn.Module, str, int, int]]], tuple[int, int]]:
        """A view of the model with shallow copies of its blocks and mixers (the model is not modified) and where the
        adapters sit in it: q, k, v: the mixer's projections; o: the whole mixer (fed its normed input); mlp: the
        MLP."""
        dim, blocks, sites = self.cfg.model_dim, [], []
        for b in self.blocks:
            mixer = shallow(b.mixer)
            block = shallow(b, mixer=mixer)
            blocks.append(block)
            sites.append(
                {
                    "q": (mixer, "c_q", dim, mixer.c_q.out_features),
                    "k": (mixer, "c_k", dim, mixer.c_k.out_features),
                    "v": (mixer, "c_v", dim, dim),
                    "o": (block, "mixer", dim, dim),
                    "mlp": (block, "mlp", dim, dim),
                }
            )
        return shallow(self, blocks=nn.ModuleList(blocks)), sites, (dim, self.cfg.vocab_size)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of the matrix products (3x the forward): 2 per weight of every block matrix, of
        the dt projections and of the head, and the scan's: q.k and scores.v over on average (L + 1) / 2 positions
        of a chunk of L = min(chunk_size, seq_len) (the causal half of the chunk), writing and reading the state
        (2 H N P multiply-adds)."""
        cfg = self.cfg
        dense = sum(m.weight.numel() for m in self.blocks.modules() if isinstance(m, nn.Linear))
        dense += self.tok_emb.weight.numel() + sum(b.mixer.dt_proj.numel() for b in self.blocks)
        chunk = min(cfg.chunk_size, seq_len)
        H, N, P = cfg.num_heads, cfg.state_dim, cfg.head_dim
        scan = cfg.num_layers * (H * (N + P) * (chunk + 1) / 2 + 2 * H * N * P)
        return 3.0 * 2 * (dense + scan)

    @staticmethod
    def size_step(cfg: SSDConfig, shrink: str) -> tuple[str, int]:
        """The A/B's sizing: the width in steps of num_heads (any head width works), or the blocks one by one."""
        return ("model_dim", cfg.num_heads) if shrink == "width" else ("num_layers", 1)

    @staticmethod
    def ablation_switches(cfg: SSDConfig) -> dict[str, dict[str, tuple]]:
        """This family's own switches for ``pipelines.ablate``: ``{switch: {key: (on, off)}}``."""
        return {
            "bos_reset": {"model.reset_at_bos": (True, False)},
            "short_conv": {"model.conv_kernel": (cfg.conv_kernel or 4, 0)},
            "output_gate": {"model.output_gate": (True, False)},
            "leaky_relu": {"model.mlp_leaky_slope": (0.5, 0.0)},
        }
