"""Language models: what the text spaces (`darts_rnn`, `transformer`) need around the shared search.

The search is the image search's (`search.run`, `search_step.make_step`, every strategy, the
loop, checkpoints, sharding); what differs lives here:
- the data: a corpus (`dnas.text`) cut into batch rows and segments of truncated
  back-propagation through time, addressed by step (`text.Stream`), so resuming stays exact;
- the loss: next-token cross-entropy over a segment's real tokens, plus DARTS' temporal
  activation regularisation (TAR) on the weights' batches;
- the recurrent state carried from one segment to the next (`TextSearchState.carry`, one per
  stream), zeroed where a stream starts over (`reset`), as the DARTS recurrent code does;
- the learning rate scaled by the segment's length over bptt (the reference's `lr2 * seq_len /
  bptt`), applied to the weights' update after clipping;
- evaluation over a whole split with the state carried across segments (one `lax.scan`):
  loss, perplexity, bits per token;
- the retraining (`train`): SGD switching to averaged SGD when validation stops improving
  (`optim.nt_asgd`), evaluated with the averaged weights.

A text model is applied as `apply(variables, inputs_BL, [mix_weights,] carry=, mask=, train=)`
-> (logits_BLV, carry, hiddens_BLH) and has `init_carry(batch_size)` (`spaces.base.Space`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dnas import checkpoint, loop, metrics, optim, parallel, state, text
from dnas import workdir as workdir_lib
from dnas.configlib import ConfigError
from dnas.genotype import Genotype
from dnas.types import Batch

DROPOUTS = ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute")


class TextSearchState(state.SearchState):
    """A search state with the recurrent state carried between the segments of each stream:
    `{"train": ..., "val": ...}` (a transformer's is empty)."""

    carry: Any


class TextTrainState(state.TrainState):
    """A retraining state with the carried recurrent state and, as the reference keeps the
    model of its best validation epoch for the test, that epoch's evaluated weights (the
    averaged ones once NT-ASGD averages) and validation loss."""

    carry: Any
    best_params: Any
    best_loss: jax.Array


@dataclasses.dataclass(frozen=True)
class TextInfo:
    """What the shared search code reads of a dataset (`data.DatasetInfo`'s `name`,
    `num_classes`, `input_shape`), for a corpus: the vocabulary size and (bptt,), the shape the
    cost models count per token at."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    level: str


def model_options(config: ml_collections.ConfigDict) -> dict[str, float]:
    """The dropout rates set in `config.text` (None leaves the space's default)."""
    return {k: config.text[k] for k in DROPOUTS if config.text[k] is not None}


def load_corpus(config: ml_collections.ConfigDict) -> text.Corpus:
    """The corpus of `config.dataset`, each split cut to its first `text.max_tokens` tokens."""
    corpus = text.load_corpus(
        config.dataset, data_dir=config.data_dir or None,
        text_dir=config.data.text_dir or None, level=config.text.level or None,
    )  # fmt: skip
    n = config.text.max_tokens
    if not n:
        return corpus
    cut = {split: getattr(corpus, split)[:n] for split in ("train", "valid", "test")}
    return dataclasses.replace(corpus, **cut, provenance=corpus.provenance | {"max_tokens": n})


CORPUS = "corpus.json"  # a text run's corpus: what it was read from, and its fingerprint


def fingerprint(corpus: text.Corpus) -> str:
    """sha256 of the vocabulary and the three splits' token ids."""
    h = hashlib.sha256("\n".join(corpus.vocab).encode())
    for split in (corpus.train, corpus.valid, corpus.test):
        h.update(np.ascontiguousarray(split, np.int32).tobytes())
    return h.hexdigest()


def check_corpus(workdir: str, corpus: text.Corpus) -> None:
    """Writes `<workdir>/corpus.json` (the corpus' provenance and fingerprint) on a run's first
    start; on a resume, a different corpus is a ConfigError: the embedded text changes between
    Python versions, a text_dir's files may have been edited, and the checkpoint's weights and
    data position belong to the text it was trained on."""
    path = os.path.join(workdir, CORPUS)
    record = {"name": corpus.name, "level": corpus.level, "vocab_size": corpus.vocab_size,
              "fingerprint": fingerprint(corpus), "provenance": corpus.provenance}  # fmt: skip
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        if before.get("fingerprint") != record["fingerprint"]:
            was = {k: before.get(k) for k in ("name", "level", "vocab_size")}
            was["python_version"] = before.get("provenance", {}).get("python_version")
            now = {k: record[k] for k in ("name", "level", "vocab_size")}
            now["python_version"] = corpus.provenance.get("python_version")
            raise ConfigError(
                f"{workdir} was trained on another text ({was}; now {now}, tokens differ): "
                "resuming would continue on different data. Use a new --workdir, or the "
                "Python version / text files it was started with"
            )
        return
    if jax.process_index() == 0:
        workdir_lib.atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def build(builder: Callable, *args, **kwargs):
    """`builder(*args, **kwargs)` (a space's supernet or network); a `text.*` option the
    builder does not take (a recurrent dropout for a transformer) is a ConfigError."""
    try:
        return builder(*args, **kwargs)
    except TypeError as err:
        message = str(err)
        refused = [k for k in kwargs if k in DROPOUTS and f"'{k}'" in message]
        if "unexpected keyword argument" not in message or not refused:
            raise
        raise ConfigError(
            f"text.{refused[0]} is not an option of this space's models: unset it"
        ) from None


# --------------------------------------------------------------------------------------------------
# Loss and evaluation.


def masked_nll(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
    """(sum of the cross-entropy over the real tokens, their number)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return jnp.sum(ce * mask), jnp.sum(mask)


def temporal_activation(hiddens: jax.Array, mask: jax.Array) -> jax.Array:
    """DARTS' (and AWD-LSTM's) TAR: the mean of (h_t+1 - h_t)^2 over consecutive real
    positions and features."""
    diff = jnp.square(hiddens[:, 1:] - hiddens[:, :-1]).astype(jnp.float32)
    pairs = mask[:, 1:] * mask[:, :-1]
    return jnp.sum(diff * pairs[..., None]) / jnp.maximum(pairs.sum() * hiddens.shape[-1], 1.0)


def reset_carry(carry: Any, reset: jax.Array) -> Any:
    """`carry` zeroed in the rows where `reset` (B,) is 1 (a stream starting over)."""
    keep = 1.0 - reset
    return jax.tree.map(lambda c: c * keep.reshape((-1,) + (1,) * (c.ndim - 1)).astype(c.dtype),
                        carry)  # fmt: skip


def make_loss_fn(model, strategy) -> Callable:
    """loss_fn(params, alphas, batch, key, step, mix=None) -> (loss, metrics) of the supernet
    on a text batch (`text.Stream.batch` plus `carry` and `tar`, the TAR weight); the metrics
    hold `loss` (what is minimised), `nll` (cross-entropy per real token) and `carry`, the
    recurrent state after the segment (taken out by `carry_step`)."""
    if strategy.skip_dropout is not None:
        raise ConfigError(
            "this strategy drops the skip connections of a convolutional cell (P-DARTS); it has "
            "no meaning for a language model"
        )

    def loss_fn(params, alphas, batch: Batch, key, step, mix=None):
        k_drop, k_mix = jax.random.split(key)
        if mix is None:
            mix = strategy.mix_weights(alphas, k_mix, step)
        carry = reset_carry(batch["carry"], batch["reset"])
        logits, carry, hiddens = model.apply(
            {"params": params}, batch["inputs"], mix, carry=carry, mask=batch["mask"],
            train=True, rngs={"dropout": k_drop},
        )  # fmt: skip
        total, n = masked_nll(logits, batch["targets"], batch["mask"])
        nll = total / jnp.maximum(n, 1.0)
        loss = nll + batch["tar"] * temporal_activation(hiddens, batch["mask"])
        return loss, {"loss": loss, "nll": nll, "carry": jax.lax.stop_gradient(carry)}

    return loss_fn


def carry_step(step_fn: Callable, tar_beta: float) -> Callable:
    """The search step (`search_step.make_step`) on text: each stream's batch gets its carried
    state and its TAR weight (the weights' batches `tar_beta`, the alphas' 0: the reference's
    architecture loss is the plain cross-entropy), and the states after the segments go back
    into `TextSearchState.carry`."""

    def step(state: TextSearchState, train_batch: Batch, val_batch: Batch):
        zero = jnp.zeros((), jnp.float32)
        train_batch = dict(train_batch, carry=state.carry["train"], tar=zero + tar_beta)
        val_batch = dict(val_batch, carry=state.carry["val"], tar=zero)
        new_state, out = step_fn(state, train_batch, val_batch)
        carry = {"train": out.pop("train/carry"), "val": out.pop("val/carry")}
        for split in ("train", "val"):
            out[f"{split}/perplexity"] = perplexity(out[f"{split}/nll"])
        return new_state.replace(carry=carry), out

    return step


def perplexity(nll: jax.Array) -> jax.Array:
    """exp(nll), capped at e^80 (float32's exp overflows past 88: a diverging run's loss is
    finite, and its perplexity should not be what stops it)."""
    return jnp.exp(jnp.minimum(nll, 80.0))


def length_scale(batch: Batch) -> jax.Array:
    """The factor of a batch's weight update: its segment's length / bptt."""
    return jnp.mean(batch["length_scale"])


def make_evaluate(apply: Callable) -> Callable:
    """evaluate(params, segments, carry) -> {"nll_sum", "tokens"} over a whole split cut by
    `text.eval_segments` ((S, B, bptt) arrays), the recurrent state carried from one segment
    to the next (one `lax.scan`); `apply(params, inputs, carry, mask)` -> (logits, carry,
    hiddens) in evaluation mode."""

    def evaluate(params, segments: Batch, carry):
        def body(carry, seg):
            logits, carry, _ = apply(params, seg["inputs"], carry, seg["mask"])
            return carry, masked_nll(logits, seg["targets"], seg["mask"])

        _, (total, n) = jax.lax.scan(body, carry, segments)
        return {"nll_sum": total.sum(), "tokens": n.sum()}

    return evaluate


def summarise(sums: dict, level: str) -> dict[str, float]:
    """loss (mean cross-entropy per token, nats), perplexity and bits per token (per character
    at character level) from `make_evaluate`'s sums."""
    loss = float(sums["nll_sum"]) / max(float(sums["tokens"]), 1.0)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    out["bits_per_char" if level == "char" else "bits_per_token"] = loss / math.log(2.0)
    return out


def eval_segments(ids: np.ndarray, batch_size: int, bptt: int, field: str = "") -> Batch:
    """`text.eval_segments` as device arrays; a text too short for `batch_size` rows is a
    ConfigError naming the config `field` that set it."""
    segments = rows_or_error(text.eval_segments, field, ids, batch_size, bptt)
    return {k: jnp.asarray(v) for k, v in segments.items()}


def rows_or_error(fn: Callable, field: str, ids: np.ndarray, batch_size: int, *args):
    """`fn(ids, batch_size, *args)` (batchify, eval_segments); its error for a split with too
    few tokens for `batch_size` rows re-raised as a ConfigError naming the config `field`."""
    try:
        return fn(ids, batch_size, *args)
    except text.TextDataError as err:
        if not field:
            raise
        raise ConfigError(f"{field}={batch_size}: {err}") from None


# --------------------------------------------------------------------------------------------------
# The search's set-up (`search_step.setup` and `search.run` call these for a text space).


@dataclasses.dataclass
class TextData:
    """A text search's streams and evaluation segments."""

    corpus: text.Corpus
    train: text.Stream
    val: text.Stream
    val_segments: Batch
    bptt: int


def search_data(config: ml_collections.ConfigDict) -> TextData:
    s, x = config.search, config.text
    corpus = load_corpus(config)
    train_rows = rows_or_error(text.batchify, "search.batch_size (training text)", corpus.train,
                               s.batch_size)  # fmt: skip
    val_rows = rows_or_error(text.batchify, "search.batch_size (validation text)", corpus.valid,
                             s.batch_size)  # fmt: skip
    kw = {"max_seq_len_delta": x.max_seq_len_delta}
    train = text.Stream(train_rows, x.bptt, mode=x.search_lengths, seed=config.seed, **kw)
    val = text.Stream(val_rows, x.bptt, mode="fixed", seed=config.seed + 1, **kw)
    segments = eval_segments(corpus.valid, x.eval_batch_size, x.bptt, "text.eval_batch_size")
    return TextData(corpus, train, val, segments, x.bptt)


def pad(batch: Batch, length: int) -> Batch:
    """`batch` with its (B, L) arrays padded to (B, `length`) (ids 0, mask 0)."""
    out = {}
    for k, v in batch.items():
        if v.ndim == 2 and v.shape[1] < length:
            v = np.pad(v, ((0, 0), (0, length - v.shape[1])))
        out[k] = v
    return out


def search_batches(td: TextData, start: int) -> Iterator[tuple[Batch, Batch]]:
    """(weights' batch, alphas' batch) from step `start` on; the alphas' segments padded to
    the weights' length (one compiled step takes both)."""
    length = max(td.train.max_len, td.val.max_len)
    for train, val in zip(text.batches(td.train, start), text.batches(td.val, start),
                          strict=False):  # fmt: skip
        yield pad(train, length), pad(val, length)


def stacked_search_batches(td: TextData, seeds: list[int], start: int) -> Iterator[tuple]:
    """`search_batches` of several sweep members (`sweep.run`), stacked on a leading member
    axis: member i's streams draw their lengths with its own seed (and seed + 1)."""
    members = [
        dataclasses.replace(
            td,
            train=dataclasses.replace(td.train, seed=seed),
            val=dataclasses.replace(td.val, seed=seed + 1),
        )
        for seed in seeds
    ]
    iters = [search_batches(m, start) for m in members]
    for group in zip(*iters, strict=False):
        yield tuple({k: np.stack([g[i][k] for g in group]) for k in group[0][i]} for i in (0, 1))


def init_search_state(config, su) -> TextSearchState:
    """The search's initial state: `search_step.create_state`'s keys and alphas, the supernet
    initialised on a token batch, zero carries."""
    alphas, k_params, k_steps = state.initial_alphas(config, su)
    x = jnp.zeros((1, su.text.train.max_len), jnp.int32)
    params = state.init_variables(
        su.model, k_params, x, su.strategy.final_weights(alphas), carry=su.model.init_carry(1),
        train=False,
    )["params"]  # fmt: skip
    B = config.search.batch_size
    return TextSearchState(
        step=jnp.zeros((), jnp.int32), params=params, alphas=alphas,
        weight_opt_state=su.weight_tx.init(params), alpha_opt_state=su.alpha_tx.init(alphas),
        rng=k_steps, carry={"train": su.model.init_carry(B), "val": su.model.init_carry(B)},
    )  # fmt: skip


def supernet_sums(model) -> Callable:
    """jit(params, mix, segments) -> `make_evaluate`'s sums of the supernet under the mixing
    weights `mix`, in evaluation mode, its state carried from zero across the segments."""

    def apply(params_and_mix, inputs, carry, mask):
        params, mix = params_and_mix
        return model.apply({"params": params}, inputs, mix, carry=carry, mask=mask, train=False)

    evaluate = make_evaluate(apply)

    @jax.jit
    def run(params, mix, segments: Batch):
        return evaluate((params, mix), segments, model.init_carry(segments["inputs"].shape[1]))

    return run


def supernet_evaluator(su, level: str) -> Callable[[TextSearchState], dict[str, float]]:
    """The supernet under the strategy's final mixing weights on the whole validation text,
    as the DARTS recurrent search's `evaluate(val_data, eval_batch_size)` at every epoch end."""
    sums = supernet_sums(su.model)

    def run(state: TextSearchState) -> dict[str, float]:
        mix = su.strategy.final_weights(state.alphas)
        return summarise(jax.device_get(sums(state.params, mix, su.text.val_segments)), level)

    return run


def selection_scorer(su, state: TextSearchState, segments: int | None) -> Callable:
    """score(genotype) -> minus the supernet's validation loss (nats per token) under the
    genotype's one-hot mixing weights, over the first `segments` validation segments (None:
    all): the fitness of random search and evolution with the trained supernet on text."""
    val = su.text.val_segments
    if segments is not None:
        val = {k: v[:segments] for k, v in val.items()}
    sums = supernet_sums(su.model)

    def score(genotype: Genotype) -> float:
        mix = {g: jnp.asarray(w) for g, w in su.space.genotype_mix(genotype).items()}
        return -summarise(jax.device_get(sums(state.params, mix, val)), su.info.level)["loss"]

    return score


# --------------------------------------------------------------------------------------------------
# Retraining.


@dataclasses.dataclass
class TrainSetup:
    genotype: Genotype
    corpus: text.Corpus
    model: Any
    asgd: optim.AveragedSGD
    learning_rate: optax.Schedule
    step_fn: Callable
    stream: text.Stream
    steps_per_epoch: int
    total_steps: int


def train_setup(config: ml_collections.ConfigDict, genotype: Genotype,
                corpus: text.Corpus | None = None) -> TrainSetup:  # fmt: skip
    t, x = config.train, config.text
    corpus = corpus or load_corpus(config)
    space = genotype.search_space
    # The genotype gives the depth (train.layers is the image networks').
    model = build(
        space.network, genotype, corpus.vocab_size, input_shape=(x.bptt,), C=t.C,
        **model_options(config),
    )  # fmt: skip
    rows = rows_or_error(text.batchify, "train.batch_size", corpus.train, t.batch_size)
    stream = text.Stream(rows, x.bptt, mode=x.train_lengths, seed=config.seed + 2,
                         max_seq_len_delta=x.max_seq_len_delta)  # fmt: skip
    spe = stream.steps_per_epoch
    learning_rate = optim.cosine_schedule(t.lr, t.lr_min, t.epochs, spe)
    inner = optim.sgd(
        learning_rate, momentum=t.momentum, weight_decay=t.weight_decay, grad_clip=t.grad_clip
    )
    asgd = optim.nt_asgd(inner, x.nonmono)
    tx = asgd.transformation

    def step_fn(st: TextTrainState, batch: Batch):
        key = jax.random.fold_in(st.rng, st.step)
        mask = batch["mask"]

        def loss_fn(params):
            carry = reset_carry(st.carry, batch["reset"])
            logits, carry, hiddens = model.apply(
                {"params": params}, batch["inputs"], carry=carry, mask=mask, train=True,
                rngs={"dropout": key},
            )  # fmt: skip
            total, n = masked_nll(logits, batch["targets"], mask)
            nll = total / jnp.maximum(n, 1.0)
            return nll + x.tar_beta * temporal_activation(hiddens, mask), (nll, carry)

        (loss, (nll, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
        scale = length_scale(batch)
        updates, opt_state = tx.update(grads, st.opt_state, st.params, scale=scale)
        new = st.replace(
            step=st.step + 1, params=optax.apply_updates(st.params, updates),
            opt_state=opt_state, carry=jax.lax.stop_gradient(carry),
        )  # fmt: skip
        return new, {"train/loss": loss, "train/nll": nll, "train/perplexity": perplexity(nll),
                     "lr": learning_rate(st.step) * scale,
                     "averaging": opt_state.averaging.astype(jnp.float32)}  # fmt: skip

    return TrainSetup(genotype, corpus, model, asgd, learning_rate, step_fn, stream, spe,
                      t.epochs * spe)  # fmt: skip


def init_train_state(config, su: TrainSetup) -> TextTrainState:
    root = jax.random.key(config.seed)
    k_params, k_steps = jax.random.fold_in(root, 10), jax.random.fold_in(root, 11)
    x = jnp.zeros((1, su.stream.max_len), jnp.int32)
    params = state.init_variables(su.model, k_params, x, carry=su.model.init_carry(1),
                                  train=False)["params"]  # fmt: skip
    return TextTrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
        opt_state=su.asgd.transformation.init(params), rng=k_steps,
        carry=su.model.init_carry(config.train.batch_size),
        best_params=jax.tree.map(jnp.copy, params), best_loss=jnp.asarray(jnp.inf, jnp.float32),
    )  # fmt: skip


def network_evaluator(su: TrainSetup) -> Callable:
    """evaluate(params, segments) -> sums over the segments (`make_evaluate`), jitted."""

    def apply(params, inputs, carry, mask):
        return su.model.apply({"params": params}, inputs, carry=carry, mask=mask, train=False)

    evaluate = make_evaluate(apply)

    @jax.jit
    def run(params, segments: Batch):
        return evaluate(params, segments, su.model.init_carry(segments["inputs"].shape[1]))

    return run


def train(config: ml_collections.ConfigDict, workdir: str, genotype: Genotype,
          clock: loop.Clock) -> dict:  # fmt: skip
    """`train.run` for a text space (its workdir already prepared): retrains `genotype` on the
    corpus, switching to averaged SGD by NT-ASGD, and returns the results of the weights of the
    best validation epoch (validation perplexity; test loss, perplexity and bits per token;
    parameters; multiply-adds per token)."""
    x = config.text
    mesh = parallel.make_mesh(config.num_devices)
    parallel.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    su = train_setup(config, genotype)
    check_corpus(workdir, su.corpus)
    st = parallel.replicate(init_train_state(config, su), mesh)
    ckpt = checkpoint.Checkpointer(workdir)
    st = loop.resume(ckpt, st, clock)
    start = int(st.step)
    batches = parallel.shard_batches(((b,) for b in text.batches(su.stream, start)), mesh)
    step_fn, compiled_record, batches = loop.compile_on_first(
        su.step_fn, "training step", config.progress, st, batches, mesh, clock
    )
    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(start, {f"train/{k}": v for k, v in compiled_record.items()})
    evaluate = network_evaluator(su)
    evaluated = jax.jit(su.asgd.params)  # the averaged weights once NT-ASGD averages
    level = su.corpus.level
    val_segments = eval_segments(su.corpus.valid, x.eval_batch_size, x.bptt, "text.eval_batch_size")
    last = {}

    def epoch_eval(st):
        last["val"] = summarise(
            jax.device_get(evaluate(evaluated(st.opt_state, st.params), val_segments)), level
        )
        return last["val"]

    def observe(st, step):
        """At an epoch end: the best validation epoch's weights kept (the reference saves its
        model then), and NT-ASGD's trigger fed this epoch's validation loss."""
        loss = last["val"]["loss"]
        if loss < float(st.best_loss):
            st = st.replace(best_params=evaluated(st.opt_state, st.params),
                            best_loss=jnp.asarray(loss, jnp.float32))  # fmt: skip
        return st.replace(opt_state=su.asgd.observe(st.opt_state, loss))

    st = loop.run(
        config, step_fn=step_fn, state=st, batches=batches, start=start,
        total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt, writer=writer,
        desc="train", postfix=lambda m: {"ppl": f"{m['train/perplexity']:.1f}"},
        on_epoch_end=lambda st, step: None, update_state=observe, epoch_eval=epoch_eval,
        clock=clock,
    )  # fmt: skip
    # The best validation epoch's weights (the final ones if no epoch ended: nothing to pick).
    best = st.best_params if bool(np.isfinite(float(st.best_loss))) else st.params
    val = summarise(jax.device_get(evaluate(best, val_segments)), level)
    test_segments = eval_segments(su.corpus.test, x.test_batch_size, x.bptt, "text.test_batch_size")
    test = summarise(jax.device_get(evaluate(best, test_segments)), level)
    stats = model_stats(su.model, x.bptt)
    totals = clock.totals()
    results = {
        "space": genotype.search_space.name,
        "genotype": genotype.to_string(),
        "dataset": config.dataset,
        "vocab_size": su.corpus.vocab_size,
        "val_perplexity": val["perplexity"],
        "test_perplexity": test["perplexity"],
        "test_loss": test["loss"],
        **{f"test_{k}": v for k, v in test.items() if k.startswith("bits")},
        "params": stats["params"],
        "macs_per_token": stats["macs_per_token"],
        "averaging": bool(jax.device_get(st.opt_state.averaging)),
        # Training tokens over the training loop's time (its steps, epoch-end evaluations and
        # checkpoints), summed over every process that ran it.
        "tokens_per_s": round(su.stream.tokens(su.total_steps) / max(totals["loop_s"], 1e-9)),
        "train_wall_s": round(totals["loop_s"], 1),
        "compile_s": round(totals["compile_s"], 1),
        "wall_s": round(totals["wall_s"], 1),
        "steps": su.total_steps,
        "corpus": su.corpus.provenance,
    }
    writer.write_scalars(su.total_steps, {f"test/{k}": v for k, v in test.items()})
    writer.close()
    ckpt.close()
    text_out = json.dumps(results, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(workdir, "results.json"), text_out)
    return results


class _WithMix:
    """A supernet with fixed mixing weights, applied as a network (`model_stats`)."""

    def __init__(self, model, mix):
        self.model, self.mix = model, mix

    def init_carry(self, batch_size: int):
        return self.model.init_carry(batch_size)

    def init(self, key, x, **kw):
        return self.model.init(key, x, self.mix, **kw)

    def apply(self, variables, x, **kw):
        return self.model.apply(variables, x, self.mix, **kw)


def with_mix(model, mix) -> _WithMix:
    return _WithMix(model, mix)


def model_stats(model, seq_len: int) -> dict[str, int]:
    """Parameters (jax.eval_shape: nothing is initialised) and multiply-adds per token of a
    text network, counted by XLA's cost analysis of its forward on one sequence of `seq_len`
    tokens (one-example batch, divided by `seq_len`). A recurrent model (one with a carry) is
    counted on one token: XLA counts a loop's body once, and its cost per token does not depend
    on the length."""
    carry = model.init_carry(1)
    if jax.tree.leaves(carry):
        seq_len = 1
    x = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, carry=carry, train=False), x)
    params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
    apply = lambda v, x: model.apply(v, x, carry=carry, train=False)[0]
    try:
        cost = jax.jit(apply).lower(shapes, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        macs = int(float(cost.get("flops", 0.0)) / 2 / seq_len)
    except Exception:  # a backend without cost analysis
        macs = -1
    return {"params": params, "macs_per_token": macs}


__all__ = [
    "TextInfo",
    "TextSearchState",
    "TextTrainState",
    "carry_step",
    "make_evaluate",
    "make_loss_fn",
    "masked_nll",
    "summarise",
    "temporal_activation",
    "train",
]
