"""The search step and its typed set-up: where a config becomes the pure functions of a search.

One jitted step (`make_step`) updates the alphas on a validation batch, then the weights on a
training batch with the new alphas (DARTS Algorithm 1); `setup(config)` builds the space's supernet,
the strategy, the optimisers, the loss and the step from a config (the ConfigDict stops here:
everything it returns takes typed arguments), and `create_state` the initial `SearchState`. The
loop that runs the step is `search.py`'s; DARTS-PT's fine-tuning (`pt.py`) and `dnas sweep`
(`sweep.py`) run the same step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dnas import (
    autotune,
    configlib,
    data,
    distill,
    evaluate,
    hardware,
    optim,
    spaces,
    strategies,
    supernet,
)
from dnas.state import SearchState, init_variables, initial_alphas
from dnas.types import Batch, Metrics


@dataclasses.dataclass(frozen=True)
class Augmentation:
    crop_padding: int | None = None  # None: the dataset's default
    flip: bool | None = None
    cutout_length: int | None = None

    @classmethod
    def from_config(cls, s: ml_collections.ConfigDict) -> Augmentation:
        """From `config.search` or `config.train` (-1: the dataset's default)."""
        return cls(
            crop_padding=None if s.crop_padding < 0 else s.crop_padding,
            flip=s.flip,
            cutout_length=None if s.cutout_length < 0 else s.cutout_length,
        )


def loss_keys(key):
    """(augmentation key, relaxation key) of a loss evaluation with `key`."""
    return jax.random.split(key)


def make_loss_fn(
    model, strategy: strategies.Strategy, info: data.DatasetInfo, aug: Augmentation,
    dtype: Any = jnp.float32, teacher: distill.Teacher | None = None, kd_weight: float = 0.0,
    kd_temperature: float = 1.0,
):  # fmt: skip
    """loss_fn(params, alphas, batch, key, step, mix=None, distil=None) -> (loss, metrics) of
    the supernet; `mix` replaces the strategy's mixing weights of `alphas` (SDARTS' perturbed
    weight step). The supernet computes in `dtype` (`configlib.compute_dtype`); the loss in
    float32. With a `teacher` (`distill.Teacher`, `search.teacher`), `distil=(teacher
    variables,)` (`()` for a logits file's teacher, whose rows come with the batch) makes the
    loss `distill.objective` of the cross-entropy and the KD term on the same augmented batch
    (the weight step's); `distil=None` keeps the plain loss (the alphas')."""

    def loss_fn(params, alphas, batch: Batch, key, step, mix=None, distil=None):
        k_aug, k_mix = loss_keys(key)
        x32 = data.preprocess(
            k_aug, batch["image"], info, train=True, crop_padding=aug.crop_padding,
            flip=aug.flip, cutout_length=aug.cutout_length, dtype=jnp.float32,
        )  # fmt: skip
        x = x32.astype(dtype)  # the teacher sees the float32 batch, in its own precision
        if mix is None:
            mix = strategy.mix_weights(alphas, k_mix, step)
        if strategy.skip_dropout is None:
            logits = model.apply({"params": params}, x, mix, train=True)
        else:  # P-DARTS: dropout on the skip connections, its own key
            logits = model.apply(
                {"params": params}, x, mix, train=True, skip_dropout=strategy.skip_dropout(step),
                rngs={"dropout": jax.random.fold_in(key, 2)},
            )  # fmt: skip
        logits = logits.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        parts = {}
        if distil is not None:
            t_logits = batch["teacher_logits"] if not distil else teacher.apply(distil[0], x32)
            kd = distill.kd_loss(logits, t_logits, kd_temperature)
            parts = {"ce": loss, "kd": kd}
            loss = distill.objective(loss, kd, kd_weight)
        metrics = {"loss": loss, "accuracy": evaluate.accuracy(logits, batch["label"])}
        return loss, metrics | parts

    return loss_fn


@dataclasses.dataclass(frozen=True)
class HardwareObjective:
    """A hardware-aware alpha objective (`config.hardware`): `objective(loss, E[C], target)`,
    E[C] the expected cost (`hardware.expected_cost`) of `resource` in `table` under the mixing
    weights of the alphas: the strategy's final weights (`sampled` False: softmax(alpha), what
    ProxylessNAS and TF-NAS take the expectation under) or the step's own sample (True: FBNet's
    Gumbel weights, the sample the validation loss was computed with)."""

    objective: Callable[[jax.Array, jax.Array, float], jax.Array]
    table: Any  # hardware.CostTable
    resource: str
    target: float
    strategy: strategies.Strategy
    sampled: bool = False

    def cost(self, alphas, key, step) -> jax.Array:
        if self.sampled:
            weights = self.strategy.mix_weights(alphas, loss_keys(key)[1], step)
        else:
            weights = self.strategy.final_weights(alphas)
        weights = {g: weights[g] for g in self.table.per_group}
        return hardware.expected_cost(weights, self.table)[self.table.index(self.resource)]

    def grad(self, g_loss, loss, alphas, key, step) -> tuple[Any, Metrics]:
        """The objective's gradient from the loss's: `g_loss` is d loss / d alphas (any
        hypergradient order), and by the chain rule d obj / d alphas = d obj / d loss * g_loss +
        d obj / d E * d E / d alphas. Also returns the metrics `cost`, `objective`."""
        cost, cost_vjp = jax.vjp(lambda a: self.cost(a, key, step), alphas)
        value, (d_loss, d_cost) = jax.value_and_grad(self.objective, argnums=(0, 1))(
            loss, cost, self.target
        )
        (g_cost,) = cost_vjp(d_cost)
        g = jax.tree.map(lambda gl, gc: d_loss * gl + gc, g_loss, g_cost)
        return g, {f"expected_{self.resource}": cost, "objective": value}


def cost_table(config: ml_collections.ConfigDict, space: spaces.Space, model, input_shape):
    """The cost table of `config.hardware`: the table file `hardware.lut` (e.g. measured by
    `dnas lut`), or the space's cost model (`space.op_costs`: params, macs, memory_access)."""
    h = config.hardware
    if h.lut:
        table = hardware.load_table(h.lut, space.ops, space.alpha_shapes, space=space.name)
        # A table of other sizes costs other ops (a CIFAR-size table for a digits search).
        setting = {"C": config.search.C, "layers": config.search.layers,
                   "input_shape": list(input_shape)}  # fmt: skip
        other = {
            k: table.meta[k] for k, v in setting.items() if k in table.meta and table.meta[k] != v
        }
        if other:
            raise configlib.ConfigError(
                f"hardware.lut={h.lut!r} was measured for {other}, this search is "
                f"{ {k: setting[k] for k in other} }: measure a table for it (dnas lut with this "
                "config)"
            )
    else:
        table = hardware.cost_model(space, model, input_shape)
    if h.resource not in table.resources:
        where = f"the table {h.lut}" if h.lut else "the space's cost model"
        hint = (
            "" if h.lut else "; for latency, measure a table with `dnas lut` and set hardware.lut"
        )
        raise configlib.ConfigError(
            f"hardware.resource={h.resource!r} is not in {where} (it has "
            f"{', '.join(table.resources)}){hint}"
        )
    return table


def make_hardware_objective(
    config: ml_collections.ConfigDict, strategy: strategies.Strategy, model, info: data.DatasetInfo
) -> HardwareObjective | None:
    """The `HardwareObjective` of `config.hardware`; None where `hardware.objective` is ''."""
    h = config.hardware
    if not h.objective:
        return None
    space = spaces.get(config.space)
    return HardwareObjective(
        objective=hardware.objective(h.objective, **configlib.objective_args(config)),
        table=cost_table(config, space, model, info.input_shape),
        resource=h.resource, target=h.target, strategy=strategy, sampled=h.sampled,
    )  # fmt: skip


def make_eval_step(
    model, strategy: strategies.Strategy, info: data.DatasetInfo, dtype: Any = jnp.float32
) -> Callable[[SearchState, Batch], Metrics]:
    """eval_step(state, batch) -> sums over the batch's counted examples (`mask`) of the
    supernet's loss and correct predictions, and their number (`{"loss", "correct", "n"}`, as
    `train.make_eval_step`), under the strategy's final mixing weights (deterministic: softmax of
    the alphas for DARTS), on images preprocessed for evaluation (normalised only). Every op is
    computed (`single_op` off), as in `selection`. The supernet's BatchNorm normalises with the
    batch's own statistics (it keeps no running ones), so batches must hold real images only:
    `data.eval_batches(..., fill="overlap")`."""
    model = supernet.full_mixture(model)

    def eval_step(state: SearchState, batch: Batch):
        x = data.preprocess(None, batch["image"], info, train=False, dtype=dtype)
        mix = strategy.final_weights(state.alphas)
        logits = model.apply({"params": state.params}, x, mix, train=True).astype(jnp.float32)
        mask = batch["mask"].astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"loss": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask), "n": mask.sum()}

    return eval_step


def make_step(
    loss_fn: Callable,
    strategy: strategies.Strategy,
    weight_tx: optax.GradientTransformation,
    alpha_tx: optax.GradientTransformation,
    learning_rate: optax.Schedule,
    alpha_start_step: int = 0,
    hardware_objective: HardwareObjective | None = None,
    update_scale: Callable[[Batch], jax.Array] | None = None,
    distilling: bool = False,
    update_mask: Callable[[Any, Any], Any] | None = None,
) -> Callable[..., tuple[SearchState, Metrics]]:
    """The pure search step `(state, train_batch, val_batch) -> (state, metrics)`: alpha update
    on `val_batch`, then weight update on `train_batch`.
    Before `alpha_start_step` (a weights-only warm-up, PC-DARTS / P-DARTS), at steps that are
    not a multiple of `strategy.alpha_every` (ProxylessNAS) and for strategies that do not learn
    alphas, the alphas stay and the validation loss is only evaluated. With `hardware_objective`
    the alphas minimise its objective of the validation loss and the expected cost instead of the
    loss alone (`HardwareObjective.grad`). `update_scale(train_batch)` scales the weights'
    update after the optimiser (the DARTS recurrent search's learning rate times the segment's
    length over bptt). `update_mask(params, alphas)`: a 0/1 tree like the parameters that
    multiplies the weights' update (SGAS' frozen edges). `distilling` (a `loss_fn` with a
    teacher): the weight step's loss
    distils, and a teacher with variables makes the step `(state, teacher_variables,
    train_batch, val_batch)` (`loop.compile_step(consts=)` binds them)."""

    def alpha_half(state: SearchState, train_batch: Batch, val_batch: Batch, key):
        g_alpha, val_metrics = strategy.alpha_grad(
            loss_fn, state.params, state.alphas, state.weight_opt_state, train_batch, val_batch,
            key, state.step,
        )  # fmt: skip
        if hardware_objective is not None:
            g_alpha, hw_metrics = hardware_objective.grad(
                g_alpha, val_metrics["loss"], state.alphas, key, state.step
            )
            val_metrics = val_metrics | hw_metrics
        reg, g_reg = jax.value_and_grad(strategy.regularizer)(state.alphas, state.step)
        g_alpha = jax.tree.map(jnp.add, g_alpha, g_reg)
        updates, alpha_opt_state = alpha_tx.update(g_alpha, state.alpha_opt_state, state.alphas)
        alphas = optax.apply_updates(state.alphas, updates)
        if strategy.after_alpha_update is not None:
            alphas = strategy.after_alpha_update(state.alphas, alphas, key, state.step)
        return alphas, alpha_opt_state, g_alpha, val_metrics, reg

    def frozen_half(state: SearchState, train_batch: Batch, val_batch: Batch, key):
        del train_batch
        _, val_metrics = loss_fn(state.params, state.alphas, val_batch, key, state.step)
        if hardware_objective is not None:  # the same metrics as alpha_half's
            zeros = jax.tree.map(jnp.zeros_like, state.alphas)
            _, hw_metrics = hardware_objective.grad(
                zeros, val_metrics["loss"], state.alphas, key, state.step
            )
            val_metrics = val_metrics | hw_metrics
        reg = strategy.regularizer(state.alphas, state.step)
        g_alpha = jax.tree.map(jnp.zeros_like, state.alphas)
        return state.alphas, state.alpha_opt_state, g_alpha, val_metrics, reg

    def step_fn(state: SearchState, *args):
        *teacher_vars, train_batch, val_batch = args
        distil = {"distil": tuple(teacher_vars)} if distilling else {}
        key = jax.random.fold_in(state.rng, state.step)
        k_alpha, k_weight = jax.random.split(key)
        args = (state, train_batch, val_batch, k_alpha)
        if not strategy.update_alphas:
            half = frozen_half(*args)
        elif alpha_start_step > 0 or strategy.alpha_every > 1:
            update = (state.step >= alpha_start_step) & (state.step % strategy.alpha_every == 0)
            half = jax.lax.cond(update, alpha_half, frozen_half, *args)
        else:
            half = alpha_half(*args)
        alphas, alpha_opt_state, g_alpha, val_metrics, reg = half

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        mix = None
        if strategy.weight_mix is not None:
            k_weight, k_perturb = jax.random.split(k_weight)
            _, k_mix = loss_keys(k_weight)  # the relaxation's key in loss_fn(..., k_weight)
            loss_of_mix = lambda m: loss_fn(
                state.params, alphas, train_batch, k_weight, state.step, mix=m, **distil
            )[0]
            mix = strategy.weight_mix(
                loss_of_mix, strategy.mix_weights(alphas, k_mix, state.step), k_perturb,
                state.step, alphas=alphas,
            )  # fmt: skip
        extra = () if mix is None else (mix,)
        (_, train_metrics), g_w = grad_fn(
            state.params, alphas, train_batch, k_weight, state.step, *extra, **distil
        )
        updates, weight_opt_state = weight_tx.update(g_w, state.weight_opt_state, state.params)
        if update_scale is not None:
            scale = update_scale(train_batch)
            updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
        if update_mask is not None:
            mask = update_mask(state.params, state.alphas)
            updates = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, mask)
        params = optax.apply_updates(state.params, updates)

        new_state = state.replace(
            step=state.step + 1,
            params=params,
            alphas=alphas,
            weight_opt_state=weight_opt_state,
            alpha_opt_state=alpha_opt_state,
        )
        out = {f"train/{k}": v for k, v in train_metrics.items()}
        out |= {f"val/{k}": v for k, v in val_metrics.items()}
        out |= {
            "lr": learning_rate(state.step),
            "alpha_reg": reg,
            "grad_norm/weights": optax.tree.norm(g_w),
            "grad_norm/alphas": optax.tree.norm(g_alpha),
        }
        return new_state, out

    return step_fn


@dataclasses.dataclass
class SearchSetup:
    """Everything the loop needs, built from a config; also what notebooks and tests use."""

    space: spaces.Space
    info: data.DatasetInfo
    model: Any
    strategy: strategies.Strategy
    weight_tx: optax.GradientTransformation
    alpha_tx: optax.GradientTransformation
    learning_rate: optax.Schedule
    loss_fn: Callable
    step_fn: Callable
    weights_source: Any
    alphas_source: Any
    steps_per_epoch: int
    total_steps: int
    text: Any = None  # a text space's data (`lm.TextData`); None for images
    autotune: dict = dataclasses.field(default_factory=dict)  # `autotune.tuned`'s record
    dtype: Any = jnp.float32  # the compute dtype (`precision`)
    teacher: distill.Teacher | None = None  # search.teacher, loaded: the weight step distils

    @property
    def consts(self) -> Any:
        """What `loop.compile_step(consts=)` binds to the step: the teacher's variables."""
        return None if self.teacher is None else self.teacher.variables


def setup(
    config: ml_collections.ConfigDict,
    *,
    info: data.DatasetInfo | None = None,
    splits: data.Splits | None = None,
    autotune_prior: Mapping[str, Any] | None = None,
    teacher: distill.Teacher | None = None,
) -> SearchSetup:
    """Builds the search from `config`; `info` and `splits` replace the config's dataset (e.g. an
    in-memory dataset of your own); `autotune_prior`: the resumed run's forms
    (`workdir.recorded_autotune`); `teacher` (`train.teacher_from_config(config, ..., "search")`):
    the weight step distils from it."""
    s = config.search
    space = spaces.get(config.space)
    if space.modality == "text":
        return text_setup(config)
    info = info or data.get_info(config.dataset)
    splits = splits or data.load(config.dataset, data_dir=config.data_dir or None)
    weights_source, alphas_source = data.search_split(splits.train, s.train_portion)
    if teacher is not None and teacher.logits is not None:  # rows come with the weights' batches
        rows = teacher.logits[: len(weights_source)]  # the split's first part (`search_split`)
        weights_source = distill.WithLogits(weights_source, rows)
    steps_per_epoch = data.steps_per_epoch(weights_source, s.batch_size)
    data.steps_per_epoch(alphas_source, s.batch_size)  # fail early: too few validation examples

    def build(impl):
        return space.supernet(
            info.num_classes, C=s.C, layers=s.layers, sep_impl=impl, remat=s.remat,
            partial_channels=s.partial_channels, single_op=s.single_op,
        )  # fmt: skip

    mix = {g: jnp.zeros(shape, jnp.float32) for g, shape in space.alpha_shapes.items()}
    x = tuning_input(config, s.batch_size, info)
    model, tuning = autotune.tuned(
        build, lambda m: m.init(jax.random.key(0), x, mix, train=True), s.sep_impl,
        prior=autotune_prior,
    )  # fmt: skip
    parts = make_step_parts(config, model, info, steps_per_epoch, teacher=teacher)
    configlib.check_method_options(config, parts[0])
    return SearchSetup(
        space, info, model, *parts, weights_source, alphas_source, steps_per_epoch,
        s.epochs * steps_per_epoch, autotune=tuning, dtype=configlib.compute_dtype(config),
        teacher=teacher,
    )  # fmt: skip


def tuning_input(config: ml_collections.ConfigDict, batch_size: int, info) -> jax.ShapeDtypeStruct:
    """The input one device's step applies the model to: its share of the batch (data parallel
    over `num_devices`), in the compute dtype (`precision`). What the autotuner times at."""
    devices = config.num_devices or jax.device_count()
    per_device = max(batch_size // devices, 1)
    return jax.ShapeDtypeStruct((per_device, *info.input_shape), configlib.compute_dtype(config))


def text_setup(config: ml_collections.ConfigDict) -> SearchSetup:
    """`setup` for a text space: the corpus' streams, the supernet over its
    vocabulary, the text loss and the carrying step (`make_step_parts`)."""
    from dnas import lm

    s = config.search
    space = spaces.get(config.space)
    td = lm.search_data(config)
    info = lm.TextInfo(config.dataset, td.corpus.vocab_size, (config.text.bptt,), td.corpus.level)
    model = lm.build(
        space.supernet, td.corpus.vocab_size, C=s.C, layers=s.layers, sep_impl=s.sep_impl,
        remat=s.remat, partial_channels=s.partial_channels, single_op=s.single_op,
        **lm.model_options(config),
    )  # fmt: skip
    spe = td.train.steps_per_epoch
    parts = make_step_parts(config, model, info, spe)
    configlib.check_method_options(config, parts[0])
    return SearchSetup(
        space, info, model, *parts, None, None, spe, s.epochs * spe, text=td
    )  # fmt: skip


# The search.* scalars used only inside the step: `make_step_parts` takes them as arguments, so
# they may be traced arrays (`sweep` vmaps the search over one of them).
HPARAMS = (
    "lr", "lr_min", "momentum", "weight_decay", "grad_clip", "alpha_lr", "alpha_b1", "alpha_b2",
    "alpha_weight_decay",
)  # fmt: skip


def make_optimizers(
    hp: dict, epochs: int, steps_per_epoch: int, *, schedule_epochs: int = 0, offset_epochs: int = 0
) -> tuple:
    """(learning_rate, weight_tx, alpha_tx) from the `HPARAMS` values in `hp`: SGD on the
    weights with a cosine learning rate over `epochs`, Adam on the alphas. A search that goes on
    from earlier stages (DrNAS' progressive scheme) follows one cosine of `schedule_epochs`
    from epoch `offset_epochs`."""
    cosine = optim.cosine_schedule(
        hp["lr"], hp["lr_min"], schedule_epochs or epochs, steps_per_epoch
    )
    offset = offset_epochs * steps_per_epoch
    learning_rate = (lambda step: cosine(step + offset)) if offset else cosine
    weight_tx = optim.sgd(
        learning_rate, momentum=hp["momentum"], weight_decay=hp["weight_decay"],
        grad_clip=hp["grad_clip"],
    )  # fmt: skip
    alpha_tx = optim.adam(
        hp["alpha_lr"], b1=hp["alpha_b1"], b2=hp["alpha_b2"],
        weight_decay=hp["alpha_weight_decay"],
    )  # fmt: skip
    return learning_rate, weight_tx, alpha_tx


def virtual_step_optimizer(hp: dict, learning_rate: optax.Schedule):
    """The weight optimiser of DARTS' finite-difference virtual step: SGD with the search's
    momentum and weight decay and no gradient clipping, as the reference's
    `architect._compute_unrolled_model` (w - xi (momentum buffer + grad + wd w))."""
    return optim.sgd(
        learning_rate, momentum=hp["momentum"], weight_decay=hp["weight_decay"], grad_clip=None
    )


def make_context(
    config: ml_collections.ConfigDict, hp: dict, weight_tx: optax.GradientTransformation,
    learning_rate: optax.Schedule, steps_per_epoch: int, model, info: data.DatasetInfo,
) -> strategies.Context:  # fmt: skip
    """What a strategy factory gets (`strategies.Context`) for a search of `config` with these
    optimisers: the space, the hypergradient order, the schedule length (`search.epochs`), the
    supernet's op costs on demand, and finite_difference's virtual-step optimiser (unclipped
    unless `search.fd_clip`)."""
    space = spaces.get(config.space)
    virtual = weight_tx if config.search.fd_clip else virtual_step_optimizer(hp, learning_rate)
    return strategies.Context(
        space=space, order=config.order, weight_tx=weight_tx, learning_rate=learning_rate,
        steps_per_epoch=steps_per_epoch, epochs=config.search.epochs,
        edge_costs=functools.partial(space.op_costs, model, info.input_shape),
        virtual_weight_tx=virtual,
    )  # fmt: skip


def make_step_parts(
    config: ml_collections.ConfigDict,
    model,
    info: data.DatasetInfo,
    steps_per_epoch: int,
    teacher: distill.Teacher | None = None,
    **hparams,
) -> tuple:
    """(strategy, weight_tx, alpha_tx, learning_rate, loss_fn, step_fn) of the search in
    `config`; `hparams` (names in `HPARAMS`) replace the config's values and may be traced;
    `teacher`: the weight step distils (`make_loss_fn`)."""
    s = config.search
    unknown = set(hparams) - set(HPARAMS)
    if unknown:
        raise KeyError(f"not a step hyper-parameter: {sorted(unknown)}; valid: {HPARAMS}")
    hp = {k: hparams.get(k, s[k]) for k in HPARAMS}
    learning_rate, weight_tx, alpha_tx = make_optimizers(
        hp, s.epochs, steps_per_epoch, schedule_epochs=s.lr_schedule_epochs,
        offset_epochs=s.lr_offset_epochs,
    )  # fmt: skip
    ctx = make_context(config, hp, weight_tx, learning_rate, steps_per_epoch, model, info)
    try:
        strategy = strategies.build(config.strategy, ctx, config.strategy_args.to_dict())
    except (KeyError, ValueError) as err:
        raise configlib.ConfigError(str(err.args[0])) from None
    text = spaces.get(config.space).modality == "text"
    if text:
        from dnas import lm

        loss_fn, update_scale = lm.make_loss_fn(model, strategy), lm.length_scale
    else:
        loss_fn = make_loss_fn(
            model, strategy, info, Augmentation.from_config(s), configlib.compute_dtype(config),
            teacher=teacher, kd_weight=s.kd_weight, kd_temperature=s.kd_temperature,
        )  # fmt: skip
        update_scale = None
    step_fn = make_step(
        loss_fn, strategy, weight_tx, alpha_tx, learning_rate,
        alpha_start_step=s.alpha_warmup_epochs * steps_per_epoch,
        hardware_objective=make_hardware_objective(config, strategy, model, info),
        update_scale=update_scale, distilling=teacher is not None,
    )  # fmt: skip
    if text:
        step_fn = lm.carry_step(step_fn, config.text.tar_beta)
    return strategy, weight_tx, alpha_tx, learning_rate, loss_fn, step_fn


def create_state(config: ml_collections.ConfigDict, su: SearchSetup) -> SearchState:
    if su.text is not None:
        from dnas import lm

        return lm.init_search_state(config, su)
    alphas, k_params, k_steps = initial_alphas(config, su)
    x = jnp.zeros((1, *su.info.input_shape), jnp.float32)
    params = init_variables(su.model, k_params, x, su.strategy.final_weights(alphas))["params"]
    return SearchState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        alphas=alphas,
        weight_opt_state=su.weight_tx.init(params),
        alpha_opt_state=su.alpha_tx.init(alphas),
        rng=k_steps,
    )
