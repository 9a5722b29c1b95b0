"""A differentiable transformer search space for (causal) language modelling: per layer, a
sequence mixer and a feed-forward block, each chosen among candidates (in the spirit of the
layer-wise transformer searches: So et al., "The Evolved Transformer", ICML 2019; Tsai et al.,
"Finding Fast Transformers: One-Shot Neural Architecture Search by Component Composition", 2020),
relaxed as DARTS relaxes an edge (Liu et al., ICLR 2019, Eq. 2).

The model (`TransformerSupernet`, `TransformerNetwork`): token embedding (vocab, d) plus a
learned positional embedding (max_len, d), dropout; L pre-norm residual layers

    x = x + dropout(mixer(LayerNorm(x))),   x = x + dropout(ffn(LayerNorm(x)));

a final LayerNorm (its output is the `hiddens`), and a decoder tied to the token embedding plus a
bias. d = `C` (the embedding width) must be a multiple of 8 (8 heads of d / 8).

Candidates (`OPS`; each op maps (B, T, d) -> (B, T, d), causally: position t sees 0..t only):
- `attn2`, `attn4`, `attn8`: multi-head causal self-attention with 2, 4, 8 heads of d / heads
  (flax `MultiHeadDotProductAttention` with `make_causal_mask`; q, k, v and output projections
  d x d with biases; no attention dropout);
- `conv3`, `conv7`, `conv15`: a causal depthwise 1-D convolution of kernel k with bias (left
  padding k - 1: position t sees t-k+1..t), then a d x d output projection with bias (the
  channels of a depthwise convolution do not mix; the projection mixes them, as attention's
  output projection does);
- `glu`: a token-wise gated linear unit, Dense(2d) -> a * sigmoid(b) -> Dense(d) (Dauphin et
  al. 2017);
- `identity`: the layer has no mixer (its residual branch, LayerNorm included, is skipped);
- `ffn1`, `ffn2`, `ffn4`: Dense(e d) -> GELU (exact, erf) -> Dense(d);
- `ffn_none`: the layer has no feed-forward block.

Alpha groups `mixer` and `ffn`, (layers, 12) each. A `Space` has one op tuple for every group,
so the columns are the 8 mixers then the 4 feed-forward ops and `Space.mask` allows each group
only its own (the strategies give the other columns weight exactly 0; the supernet does not
compute them). `identity` and `ffn_none` are real choices, kept in `discrete_ops`.

Depth. A `Space`'s alpha shapes are fixed, so a space is made for one search depth:
`make_space(layers)`; `SPACE = make_space(4)` is the registered `transformer` (alphas (4, 12)
per group). Its supernet builder refuses another `layers` (register `make_space(L,
name=...)` to search L layers). Genotypes of any depth >= 1 are valid in every transformer
space and build networks of their own depth (`build_network`'s `layers` defaults to it);
`genotype_mix` gives a genotype's own number of rows and `discretise` takes any.

Supernet: each slot's output is sum_k w[k] op_k(x) over the group's ops (mixing weight row w),
`identity` / `ffn_none` contributing 0. Parameters sit under `layer_{i}/{mixer,ffn}/{op}/...` in
both models (the discrete network's tree is a subtree of the supernet's), the norms under
`layer_{i}/{mixer,ffn}_norm`, then `embed`, `pos_embed`, `final_norm`, `decoder_bias`.
Calling convention (the text spaces', `Space.modality == 'text'`, `dnas.lm`):
`apply(variables, inputs_BL, [mix_weights,] carry=, mask=, train=, rngs={'dropout': key})` ->
(logits_BLV, carry, hiddens_BLD); a transformer has no carry (`init_carry(batch_size)` is `()`,
returned as given) and ignores `mask` (padding only ends rows and attention is causal, so real
tokens never see it). Logits are float32 (float64 where the computation is).

Text format: layers separated by `|`, each `mixer+ffn`, e.g.
`attn4+ffn4 | conv7+ffn2 | identity+ffn_none`.

Cost model (`op_costs`, per token at sequence length T = input_shape[0]; `hardware.
candidate_costs` of `candidates`, i.e. each op applied to one sequence of T tokens, divided by T
except for the parameters): parameters of the op; multiply-adds of its dense layers and
convolutions as computed: attention 4 d^2 + 2 T d (QK^T and AV over all T keys, the products
flax computes under a causal mask, not the T/2 on average a causal kernel would skip to),
conv k d + d^2, glu 3 d^2, ffn 2 e d^2; memory access (ShuffleNet V2's MAC, as for images)
params / T + 2 d (the parameters read once per sequence, the op's input read and output
written). `identity` and `ffn_none` cost 0. The LayerNorms, embeddings and decoder are outside
the table (the fixed part, which `hardware.cost_model` leaves at 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dnas import hardware, literals, ops
from dnas.genotype import Genotype, show
from dnas.spaces.base import Candidate, Diagram, Space, TextFormat
from dnas.types import Alphas, Array, MixWeights, PRNGKey

NAME = "transformer"
MIXER_OPS = ("attn2", "attn4", "attn8", "conv3", "conv7", "conv15", "glu", "identity")
FFN_OPS = ("ffn1", "ffn2", "ffn4", "ffn_none")
OPS = MIXER_OPS + FFN_OPS
GROUPS: Mapping[str, tuple[str, ...]] = {"mixer": MIXER_OPS, "ffn": FFN_OPS}
FREE_OPS = ("identity", "ffn_none")  # compute nothing: the residual branch is skipped
DEFAULT_LAYERS = 4  # the registered space's search depth
D_MODEL = 256
MAX_LEN = 512
DROPOUT = 0.1
HEADS = {"attn2": 2, "attn4": 4, "attn8": 8}
KERNELS = {"conv3": 3, "conv7": 7, "conv15": 15}
EXPANSIONS = {"ffn1": 1, "ffn2": 2, "ffn4": 4}

_GROUP_NAMES = {"mixer": "mixer", "ffn": "feed-forward op"}


def group_mask(group: str) -> np.ndarray:
    """(ops,) bool: the columns of `group`'s candidates."""
    return np.isin(np.asarray(OPS), GROUPS[group])


# --------------------------------------------------------------------------------------------------
# The candidate ops: (B, T, d) -> (B, T, d), applied as `op(x, train)`.


class CausalAttention(nn.Module):
    """Multi-head causal self-attention, `heads` heads of d / heads (flax's attention)."""

    heads: int

    @nn.compact
    def __call__(self, x_BTD: Array, train: bool = False) -> Array:
        del train  # no attention dropout: the layer drops the residual branch
        _, T, d = x_BTD.shape
        ops.record_macs(T * (4 * d * d + 2 * T * d))  # projections, QK^T, AV (all T keys)
        mask = nn.make_causal_mask(jnp.ones(x_BTD.shape[:2], jnp.int32), dtype=jnp.bool_)
        attention = nn.MultiHeadDotProductAttention(
            self.heads, qkv_features=d, out_features=d, name="attention"
        )
        return attention(x_BTD, mask=mask)


class CausalConv(nn.Module):
    """Causal depthwise 1-D convolution of kernel `kernel` with bias (left padding kernel - 1),
    then a d x d output projection."""

    kernel: int

    @nn.compact
    def __call__(self, x_BTD: Array, train: bool = False) -> Array:
        del train
        _, T, d = x_BTD.shape
        ops.record_macs(T * (self.kernel * d + d * d))
        conv = nn.Conv(
            d, (self.kernel,), padding=((self.kernel - 1, 0),), feature_group_count=d,
            name="depthwise",
        )  # fmt: skip
        return nn.Dense(d, name="project")(conv(x_BTD))


class GLU(nn.Module):
    """Token-wise gated linear unit: Dense(2d) -> a * sigmoid(b) -> Dense(d)."""

    @nn.compact
    def __call__(self, x_BTD: Array, train: bool = False) -> Array:
        del train
        _, T, d = x_BTD.shape
        ops.record_macs(T * 3 * d * d)
        a, b = jnp.split(nn.Dense(2 * d, name="expand")(x_BTD), 2, axis=-1)
        return nn.Dense(d, name="project")(a * jax.nn.sigmoid(b))


class FFN(nn.Module):
    """The transformer's feed-forward block: Dense(e d) -> GELU -> Dense(d)."""

    expansion: int

    @nn.compact
    def __call__(self, x_BTD: Array, train: bool = False) -> Array:
        del train
        _, T, d = x_BTD.shape
        ops.record_macs(T * 2 * self.expansion * d * d)
        h = nn.gelu(nn.Dense(self.expansion * d, name="expand")(x_BTD), approximate=False)
        return nn.Dense(d, name="project")(h)


def make_op(op: str, **module_kwargs: Any) -> nn.Module | None:
    """The module of candidate `op` (`module_kwargs`: name, parent), None for an op that
    computes nothing (`identity`, `ffn_none`); a KeyError listing the ops otherwise."""
    if op in HEADS:
        return CausalAttention(HEADS[op], **module_kwargs)
    if op in KERNELS:
        return CausalConv(KERNELS[op], **module_kwargs)
    if op == "glu":
        return GLU(**module_kwargs)
    if op in EXPANSIONS:
        return FFN(EXPANSIONS[op], **module_kwargs)
    if op in FREE_OPS:
        return None
    raise KeyError(f"unknown transformer operation {op!r}; valid operations: {', '.join(OPS)}")


# --------------------------------------------------------------------------------------------------
# The networks.


class Slot(nn.Module):
    """A layer's mixer or feed-forward block: its `ops` (all of the group's in a supernet, the
    chosen one in a network), each a child named after it. With a mixing-weight row w_K
    (ops,) over `OPS`: sum_k w_K[k] op_k(x); without: the one op's output. None if no op
    computes anything."""

    ops: tuple[str, ...]

    @nn.compact
    def __call__(self, x_BTD: Array, w_K: Array | None, train: bool) -> Array | None:
        if w_K is None and len(self.ops) != 1:
            raise ValueError(f"a slot of several ops {self.ops} needs mixing weights")
        out = None
        for op in self.ops:
            module = make_op(op, name=op)
            if module is None:
                continue
            y = module(x_BTD, train)
            y = y if w_K is None else w_K[OPS.index(op)] * y
            out = y if out is None else out + y
        return out


class Layer(nn.Module):
    """One pre-norm residual layer: x + dropout(mixer(LN(x))), then + dropout(ffn(LN(x))); a
    slot whose ops all compute nothing is skipped, its LayerNorm included."""

    mixer: tuple[str, ...]
    ffn: tuple[str, ...]
    dropout: float

    @nn.compact
    def __call__(
        self, x_BTD: Array, w_mixer: Array | None, w_ffn: Array | None, train: bool
    ) -> Array:
        for group, ops_, w_K in (("mixer", self.mixer, w_mixer), ("ffn", self.ffn, w_ffn)):
            if all(op in FREE_OPS for op in ops_):
                continue
            h = nn.LayerNorm(epsilon=1e-5, name=f"{group}_norm")(x_BTD)
            y = Slot(ops_, name=group)(h, w_K, train)
            x_BTD = x_BTD + nn.Dropout(self.dropout)(y, deterministic=not train)
        return x_BTD


def check_width(C: Any) -> int:
    """d_model: a positive multiple of 8 (8 heads of d / 8), else a one-line ValueError."""
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 8 or C % 8:
        raise ValueError(
            f"the transformer's width C (d_model) must be a positive multiple of 8 (attn8 splits "
            f"it into 8 heads), got {show(C)}"
        )
    return int(C)


class _LanguageModel(nn.Module):
    """What the supernet and the network share: embeddings, final norm, tied decoder, and the
    text calling convention's carry (none)."""

    num_classes: int  # the vocabulary size
    C: int = D_MODEL
    dropout: float = DROPOUT
    max_len: int = MAX_LEN

    def init_carry(self, batch_size: int) -> tuple:
        """A transformer keeps no state between batches."""
        del batch_size
        return ()

    def _run(self, inputs_BL: Array, train: bool, layers: Sequence[tuple]) -> tuple[Array, Array]:
        """(logits, hiddens) through `layers`: (module, w_mixer, w_ffn) each."""
        check_width(self.C)
        if inputs_BL.ndim != 2 or not jnp.issubdtype(inputs_BL.dtype, jnp.integer):
            raise ValueError(
                f"a transformer takes integer tokens of shape (batch, length), got "
                f"{inputs_BL.dtype}{tuple(inputs_BL.shape)}"
            )
        T = inputs_BL.shape[1]
        if self.max_len < T:
            raise ValueError(
                f"sequences of {T} tokens exceed the transformer's max_len={self.max_len} (its "
                f"positional embedding); build it with max_len >= {T}"
            )
        init = nn.initializers.normal(stddev=0.02)
        embed = nn.Embed(self.num_classes, self.C, embedding_init=init, name="embed")
        pos_TD = self.param("pos_embed", init, (self.max_len, self.C))[:T]
        x = embed(inputs_BL) + pos_TD
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        for layer, w_mixer, w_ffn in layers:
            x = layer(x, w_mixer, w_ffn, train)
        hiddens = nn.LayerNorm(epsilon=1e-5, name="final_norm")(x)
        ops.record_macs(T * self.C * self.num_classes)
        bias = self.param("decoder_bias", nn.initializers.zeros, (self.num_classes,))
        logits = embed.attend(hiddens) + bias
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), hiddens


class TransformerSupernet(_LanguageModel):
    """The search network: `layers` layers whose slots mix every candidate of their group with
    the mixing weights {'mixer': (layers, ops), 'ffn': (layers, ops)}; `remat` recomputes each
    layer in the backward pass (`nn.remat`)."""

    layers: int = DEFAULT_LAYERS
    remat: bool = False

    @nn.compact
    def __call__(
        self, inputs_BL: Array, mix_weights: MixWeights, *, carry: Any = (),
        mask: Array | None = None, train: bool = True,
    ) -> tuple[Array, Any, Array]:  # fmt: skip
        del mask  # causal attention: trailing padding is never seen by a real token
        check_mix(mix_weights, self.layers)
        layer_cls = nn.remat(Layer, static_argnums=(4,)) if self.remat else Layer
        layers = [
            (
                layer_cls(MIXER_OPS, FFN_OPS, self.dropout, name=f"layer_{i}"),
                mix_weights["mixer"][i],
                mix_weights["ffn"][i],
            )
            for i in range(self.layers)
        ]
        logits, hiddens = self._run(inputs_BL, train, layers)
        return logits, carry, hiddens


class TransformerNetwork(_LanguageModel):
    """The discrete network of a genotype: layer i computes `mixer[i]` and `ffn[i]` only
    (parameters under the supernet's names)."""

    genotype: Genotype | None = None

    @nn.compact
    def __call__(
        self, inputs_BL: Array, *, carry: Any = (), mask: Array | None = None,
        train: bool = False,
    ) -> tuple[Array, Any, Array]:  # fmt: skip
        del mask
        check_genotype(self.genotype)
        layers = [
            (Layer((m,), (f,), self.dropout, name=f"layer_{i}"), None, None)
            for i, (m, f) in enumerate(zip(self.genotype.mixer, self.genotype.ffn, strict=True))
        ]
        logits, hiddens = self._run(inputs_BL, train, layers)
        return logits, carry, hiddens


def check_mix(mix_weights: MixWeights, layers: int) -> None:
    """A one-line ValueError unless `mix_weights` has (layers, ops) per group (keys with a `/`
    are a strategy's: ignored, the full mixture computes the same function)."""
    expected = {g: (layers, len(OPS)) for g in GROUPS}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in mix_weights.items() if "/" not in k}
    if got != expected:
        raise ValueError(
            f"mixing weights of a {layers}-layer transformer supernet must be {expected} "
            f"(alpha group -> (layers, ops)), got {got}"
        )


def _model_options(dropout: Any, max_len: Any) -> dict[str, Any]:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {show(dropout)}")
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len must be a positive integer, got {show(max_len)}")
    return {"dropout": float(dropout), "max_len": int(max_len)}


def build_supernet(
    num_classes: int, *, C: int | None = D_MODEL, layers: int = DEFAULT_LAYERS,
    sep_impl: str = "fused", remat: bool = False, partial_channels: int = 1,
    single_op: bool = False, dropout: float = DROPOUT, max_len: int = MAX_LEN,
) -> TransformerSupernet:  # fmt: skip
    """The search network over a vocabulary of `num_classes` tokens: `layers` layers of width C
    (d_model, a multiple of 8; None: 256), `dropout` on the embeddings and every residual
    branch, positional embeddings for `max_len` tokens. `sep_impl` means nothing here;
    partial channels (PC-DARTS) and `single_op` are refused. An option it does not take (a
    recurrent dropout) is Python's TypeError, which `lm.build` reports."""
    del sep_impl
    if partial_channels != 1:
        raise ValueError(
            "the transformer space has no partial-channel edges (PC-DARTS); set "
            "search.partial_channels=1"
        )
    if single_op:
        raise ValueError(
            "the transformer supernet computes the full mixture only; single_op is not supported"
        )
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"layers must be a positive integer, got {show(layers)}")
    C = D_MODEL if C is None else check_width(C)
    return TransformerSupernet(
        num_classes, C, layers=int(layers), remat=remat, **_model_options(dropout, max_len)
    )


def build_network(
    genotype: Genotype, num_classes: int, *, input_shape: Sequence[int] | None = None,
    C: int | None = None, layers: int | None = None, auxiliary: bool = False,
    sep_impl: str = "fused", dropout: float = DROPOUT, max_len: int = MAX_LEN,
) -> TransformerNetwork:  # fmt: skip
    """The network of `genotype` over a vocabulary of `num_classes` tokens, width C (None: 256);
    `layers` (None: the genotype's depth) must be the genotype's depth; `input_shape`
    ((seq_len,)) is checked against max_len; dropout and max_len as `build_supernet`'s."""
    del sep_impl
    check_genotype(genotype)
    depth = len(genotype.mixer)
    if layers is not None and layers != depth:
        raise ValueError(
            f"the transformer genotype has {depth} layers; a network of layers={layers} would "
            f"not be that genotype (leave layers unset, or set it to {depth})"
        )
    if auxiliary:
        raise ValueError("the transformer network has no auxiliary head")
    options = _model_options(dropout, max_len)
    if input_shape is not None and input_shape[0] > max_len:
        raise ValueError(f"sequences of {input_shape[0]} tokens exceed max_len={max_len}")
    C = D_MODEL if C is None else check_width(C)
    return TransformerNetwork(num_classes, C, genotype=genotype, **options)


# --------------------------------------------------------------------------------------------------
# Candidates and costs.


def _seq_len(model: TransformerSupernet, input_shape: Sequence[int]) -> int:
    if len(input_shape) != 1 or not isinstance(input_shape[0], (int, np.integer)):
        raise ValueError(
            f"a transformer's costs are per token at a sequence length: input_shape=(seq_len,), "
            f"got {show(tuple(input_shape))}"
        )
    T = int(input_shape[0])
    if not 1 <= T <= model.max_len:
        raise ValueError(f"seq_len must be in 1..max_len={model.max_len}, got {T}")
    return T


def candidates(model: TransformerSupernet, input_shape: Sequence[int]) -> list[Candidate]:
    """Every (group, layer, op) of `model` but `identity` and `ffn_none`, as the op's module
    alone (`module.apply(variables, x, False)` on x of (batch, seq_len, C)); input_shape is
    (seq_len,), a candidate's (seq_len, C)."""
    T = _seq_len(model, input_shape)
    return [
        Candidate(group, 0, row, op, make_op(op, parent=None), (T, model.C))
        for group, ops_ in GROUPS.items()
        for row in range(model.layers)
        for op in ops_
        if op not in FREE_OPS
    ]


def op_costs(model: TransformerSupernet, input_shape: Sequence[int]) -> dict[str, np.ndarray]:
    """{'mixer': (1, layers, ops, 3), 'ffn': (1, layers, ops, 3)}: per token at seq_len =
    input_shape[0], the parameters, multiply-adds and memory access of every candidate (see the
    module docstring); 0 for `identity`, `ffn_none` and the other group's columns."""
    T = _seq_len(model, input_shape)
    shapes = {g: (model.layers, len(OPS)) for g in GROUPS}
    costs = hardware.candidate_costs(candidates(model, input_shape), OPS, shapes)
    for c in costs.values():
        c[..., 1:] /= T  # multiply-adds and memory access per sequence -> per token
    return costs


# --------------------------------------------------------------------------------------------------
# Genotypes.


def op_error(group: str, op: Any) -> str | None:
    """Why `op` cannot be a choice of `group`, or None."""
    if not isinstance(op, str):
        return f"expected a {_GROUP_NAMES[group]} name, got {show(op)}"
    if op in GROUPS[group]:
        return None
    other = next((g for g, o in GROUPS.items() if g != group and op in o), None)
    valid = ", ".join(GROUPS[group])
    if other is not None:
        return (
            f"{op!r} is a {_GROUP_NAMES[other]}, not a {_GROUP_NAMES[group]} (a layer is "
            f"mixer+ffn); {group} ops: {valid}"
        )
    return f"unknown {_GROUP_NAMES[group]} {show(op)}; expected one of {valid}"


def check_fields(fields: Mapping[str, Any], name: str = NAME) -> dict[str, Any]:
    """The canonical fields (tuples of op names), or a one-line ValueError naming the
    problem."""
    extra = sorted(str(f) for f in fields if f not in GROUPS)
    missing = [g for g in GROUPS if g not in fields]
    if extra or missing:
        problem = f"unknown fields {extra}" if extra else f"missing field {missing[0]!r}"
        raise ValueError(f"invalid {name} genotype: {problem}; expected 'mixer' and 'ffn'")
    out = {}
    for group in GROUPS:
        value = fields[group]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"invalid {name} genotype: {group} must be a non-empty list of op names, one per "
                f"layer, got {show(value)}"
            )
        for i, op in enumerate(value):
            error = op_error(group, op)
            if error:
                raise ValueError(f"invalid {name} genotype: {group}[{i}]: {error}")
        out[group] = tuple(value)
    if len(out["mixer"]) != len(out["ffn"]):
        raise ValueError(
            f"invalid {name} genotype: {len(out['mixer'])} mixers but {len(out['ffn'])} "
            "feed-forward ops; expected one of each per layer"
        )
    return out


def check_genotype(genotype: Any) -> None:
    """A ValueError unless `genotype` is a transformer genotype (of any transformer space)."""
    if not isinstance(genotype, Genotype) or set(genotype.fields()) != set(GROUPS):
        space = genotype.space if isinstance(genotype, Genotype) else type(genotype).__name__
        raise ValueError(f"expected a transformer genotype (mixer, ffn), got a {space} one")


def to_string(genotype: Genotype) -> str:
    """`mixer+ffn | mixer+ffn | ...`, one `mixer+ffn` per layer."""
    check_genotype(genotype)
    return " | ".join(f"{m}+{f}" for m, f in zip(genotype.mixer, genotype.ffn, strict=True))


_NAME_RE = re.compile(r"[A-Za-z0-9_]+")
_SPACE_RE = re.compile(r"\s*")
WHAT = "transformer genotype string"


def from_string(text: str, space: Space | None = None) -> Genotype:
    """Parses `to_string`'s format (whitespace around tokens is free) into a genotype of
    `space` (None: `SPACE`); anything else is a one-line ValueError with the character
    position."""
    if not isinstance(text, str):
        raise ValueError(f"a {WHAT} must be a str, got {type(text).__name__}")
    end = len(text.rstrip())

    def fail(pos: int, message: str) -> ValueError:
        return literals.position_error(text, pos, message, WHAT)

    def found(pos: int) -> str:
        return "the end" if pos >= end else repr(text[pos])

    def skip(pos: int) -> int:
        return min(_SPACE_RE.match(text, pos).end(), max(end, pos))

    def name(pos: int, layer: int, group: str) -> tuple[str, int]:
        match = _NAME_RE.match(text, pos, end)
        if match is None:
            raise fail(
                pos,
                f"layer {layer}: expected a {_GROUP_NAMES[group]} ({', '.join(GROUPS[group])}), "
                f"found {found(pos)}",
            )
        error = op_error(group, match[0])
        if error:
            raise fail(pos, f"layer {layer}: {error}")
        return match[0], skip(match.end())

    fields: dict[str, list[str]] = {"mixer": [], "ffn": []}
    pos, layer = skip(0), 0
    while True:
        op, pos = name(pos, layer, "mixer")
        fields["mixer"].append(op)
        if pos >= end or text[pos] != "+":
            raise fail(
                pos, f"layer {layer}: expected '+' between mixer and ffn, found {found(pos)}"
            )
        op, pos = name(skip(pos + 1), layer, "ffn")
        fields["ffn"].append(op)
        if pos >= end:
            break
        if text[pos] != "|":
            raise fail(
                pos, f"layer {layer}: expected '|' before the next layer or the end, found "
                f"{found(pos)}",
            )  # fmt: skip
        pos, layer = skip(pos + 1), layer + 1
    return (SPACE if space is None else space).genotype(**fields)


def detect(text: str) -> bool:
    """Whether `text` looks like this format: a name then '+' (no other space's format starts
    so: NAS-Bench-201's with '|', DARTS' with 'Genotype(', the chains' with 'name:')."""
    return isinstance(text, str) and re.match(r"\s*[A-Za-z0-9_]+\s*\+", text) is not None


def discretise(weights: MixWeights) -> dict[str, tuple[str, ...]]:
    """Each row's op of largest weight among its group's (ties to the earlier op)."""
    out, rows = {}, set()
    for group in GROUPS:
        w = np.asarray(weights[group], np.float64)
        if w.ndim != 2 or w.shape[1] != len(OPS):
            raise ValueError(
                f"transformer weights of {group!r} must be (layers, {len(OPS)}), got {w.shape}"
            )
        rows.add(w.shape[0])
        choice = np.argmax(np.where(group_mask(group), w, -np.inf), axis=-1)
        out[group] = tuple(OPS[k] for k in choice)
    if len(rows) != 1:
        raise ValueError(f"transformer weights must have as many mixer as ffn rows, got {rows}")
    return out


def random_fields(rng: np.random.Generator, layers: int) -> dict[str, tuple[str, ...]]:
    """A uniformly random op of each group in each of `layers` layers."""
    return {g: tuple(str(op) for op in rng.choice(ops_, layers)) for g, ops_ in GROUPS.items()}


def mutated(genotype: Genotype, rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """Regularised evolution's mutation: one random slot (layer and group) takes another op of
    its group."""
    fields = {g: list(genotype[g]) for g in GROUPS}
    group = str(rng.choice(list(GROUPS)))
    i = int(rng.integers(len(fields[group])))
    fields[group][i] = str(rng.choice([op for op in GROUPS[group] if op != fields[group][i]]))
    return {g: tuple(v) for g, v in fields.items()}


def genotype_mix(genotype: Genotype) -> dict[str, np.ndarray]:
    """One-hot (layers, ops) float32 weights per group, as many rows as the genotype has
    layers."""
    check_genotype(genotype)
    out = {}
    for group in GROUPS:
        chosen = genotype[group]
        w = np.zeros((len(chosen), len(OPS)), np.float32)
        w[np.arange(len(chosen)), [OPS.index(op) for op in chosen]] = 1.0
        out[group] = w
    return out


def sample_mix(key: PRNGKey, alphas: Alphas) -> MixWeights:
    """One-hot weights of a uniformly random op of each group per row, inside jit (rows from
    `alphas`)."""
    keys = jax.random.split(key, len(GROUPS))
    out = {}
    for k, group in zip(keys, GROUPS, strict=True):
        a = alphas[group]
        logits = jnp.broadcast_to(jnp.where(group_mask(group), 0.0, -jnp.inf), a.shape)
        out[group] = jax.nn.one_hot(jax.random.categorical(k, logits), len(OPS), dtype=a.dtype)
    return out


def diagrams(genotype: Genotype) -> dict[str, Diagram]:
    """The chosen layers in order: tokens, each layer's sequence mixer then feed-forward (a
    skipped one shown as such), the decoder."""
    nodes, edges, last = [("tokens", "input")], [], "tokens"
    for i, (mixer, ffn) in enumerate(zip(genotype.mixer, genotype.ffn, strict=True)):
        for op in (mixer, ffn):
            name = f"{i}: {op}"
            nodes.append((name, "node"))
            edges.append((last, name, ""))
            last = name
    nodes.append(("logits", "output"))
    edges.append((last, "logits", ""))
    return {"layers": Diagram(tuple(nodes), tuple(edges))}


def make_space(
    layers: int = DEFAULT_LAYERS, *, name: str = NAME, known: Mapping[str, Genotype] | None = None
) -> Space:
    """The transformer `Space` searching `layers` layers (alphas (layers, ops) per group);
    `name` its registry name (another depth needs another name), `known` a dict the caller may
    fill with published genotypes once the space exists."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive integer, got {show(layers)}")
    rows, box = layers, []

    def make(**fields: Any) -> Genotype:
        return Genotype(box[0], check_fields(fields, name))

    def supernet(num_classes: int, *, layers: int = rows, **kwargs: Any) -> TransformerSupernet:
        if layers != rows:
            raise ValueError(
                f"the {name!r} space searches {rows} layers (its alphas have {rows} rows per "
                f"group), got layers={layers}: set search.layers={rows}, or register "
                f"transformer.make_space({layers}, name=...) to search {layers}"
            )
        return build_supernet(num_classes, layers=layers, **kwargs)

    text = TextFormat(
        name, lambda t: from_string(t, box[0]), to_string, detect,
        description=f"{name} genotype string, mixer+ffn | mixer+ffn | ... (one per layer)",
    )  # fmt: skip
    labels = tuple(f"l{i}" for i in range(rows))
    mask = {}
    for group in GROUPS:
        m = np.broadcast_to(group_mask(group), (rows, len(OPS))).copy()
        m.setflags(write=False)
        mask[group] = m
    space = Space(
        name=name,
        ops=OPS,
        alpha_shapes={g: (rows, len(OPS)) for g in GROUPS},
        row_labels={g: labels for g in GROUPS},
        supernet=supernet,
        network=build_network,
        op_costs=op_costs,
        genotype=make,
        discretise=lambda weights: make(**discretise(weights)),
        random_genotype=lambda rng: make(**random_fields(rng, rows)),
        genotype_mix=genotype_mix,
        formats=(text,),
        known={} if known is None else known,
        mutate=lambda genotype, rng: genotype.replace(**mutated(genotype, rng)),
        sample_mix=sample_mix,
        discrete_ops=OPS,
        tiny_layers=rows,
        min_layers=1,
        candidates=candidates,
        mask=mask,
        modality="text",
        diagrams=diagrams,
    )
    box.append(space)
    return space


KNOWN: dict[str, Genotype] = {}
SPACE = make_space(DEFAULT_LAYERS, known=KNOWN)
KNOWN |= {
    # The reference point, not a search result: a GPT-style stack (4-head attention, 4x
    # feed-forward) at the space's default depth.
    "transformer_vanilla": SPACE.genotype(
        mixer=("attn4",) * DEFAULT_LAYERS, ffn=("ffn4",) * DEFAULT_LAYERS
    ),
}

__all__ = [
    "FFN_OPS", "GROUPS", "KNOWN", "MIXER_OPS", "OPS", "SPACE", "TransformerNetwork",
    "TransformerSupernet", "build_network", "build_supernet", "candidates", "from_string",
    "make_op", "make_space", "op_costs", "to_string",
]  # fmt: skip
