"""Search strategies: the DARTS family as small factories of pure functions.

A `Strategy` says how alphas become mixing weights (during search and for discretisation), how
their gradient is computed, what regulariser joins the upper-level objective, and optionally how
the weight step perturbs the mixing weights (SDARTS), how alphas are initialised (PC-DARTS' edge
betas) and how a genotype is selected from the final weights (every strategy here keeps the
space's rule, `space.discretise`). A factory takes a `Context` (what
every strategy may need: the space, the hypergradient order and weight optimiser, the schedule
length) and the method's own keyword arguments, which come from `config.strategy_args`;
`STRATEGIES` maps config names to factories, `build` checks the arguments against the factory's
signature.

Schedules (temperatures, regulariser weights, perturbation sizes) move once per epoch, with the
formula of each method's code (`Context.linear`: start at the first epoch, end at the last;
`Context.ramp`: epoch / epochs). Defaults are the authors' code's for the DARTS space (see each
factory; the configs in `experiments/` set the rest of each paper's protocol).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnas import bilevel, hardware, relaxations
from dnas.genotype import Genotype
from dnas.spaces.base import Space
from dnas.types import Alphas, Array, MixWeights, PRNGKey

# (loss of mixing weights, mixing weights, key, step, alphas=) -> mixing weights for the weight
# step. `alphas` (keyword) lets a wrapper hold parts of the weights fixed (DARTS-PT's projection).
WeightMix = Callable[..., MixWeights]


class Strategy(NamedTuple):
    name: str
    mix_weights: relaxations.Relaxation  # used by the supernet during search
    final_weights: Callable[[Alphas], MixWeights]  # deterministic: discretisation and logging
    alpha_grad: bilevel.AlphaGrad
    regularizer: Callable[[Alphas, Array], Array]  # added to the upper-level (alpha) objective
    weight_mix: WeightMix | None = None  # None: the weight step uses mix_weights as they are
    init_alphas: Callable[[Space, PRNGKey, float], Alphas] | None = None  # None: the space's
    select: Callable[[Space, MixWeights], Genotype] = lambda space, weights: space.discretise(
        weights
    )
    update_alphas: bool = True  # False: alphas stay as initialised (random search)
    one_hot: bool = False  # mix_weights are one-hot in value (GDAS, random search): single_op ok
    # step -> dropout rate on the supernet's identity skip connections (P-DARTS); None: none.
    skip_dropout: Callable[[Array], Array] | None = None
    # True: a schedule spans `Context.epochs` (the search's length), so a search of this strategy
    # cannot be extended with more epochs on resume (`configlib.prepare_workdir`).
    reads_epochs: bool = False
    # The alphas are updated at every `alpha_every`-th step only (ProxylessNAS: 5); at the other
    # steps the validation loss is evaluated and the alphas and their optimiser state stay.
    alpha_every: int = 1
    # (alphas before, alphas after the optimiser's update, the alpha step's key, step) -> the
    # alphas kept (ProxylessNAS rescales the two sampled paths' alphas); None: the update's.
    after_alpha_update: Callable[[Alphas, Alphas, PRNGKey, Array], Alphas] | None = None


class Context(NamedTuple):
    """What the search gives every strategy factory."""

    space: Space
    order: str = "first"  # hypergradient: first | second | finite_difference
    weight_tx: optax.GradientTransformation | None = None
    learning_rate: optax.ScalarOrSchedule | None = None
    steps_per_epoch: int = 1
    epochs: int = 1
    # Alpha group -> (units, rows, ops, resources) op costs of the supernet (`space.op_costs`),
    # computed when a strategy asks (SNAS' resource constraint).
    edge_costs: Callable[[], Mapping[str, np.ndarray]] | None = None
    # The weight optimiser of finite_difference's virtual step w' = w - xi grad (DARTS Eq. 7): the
    # reference (`architect._compute_unrolled_model`) applies momentum and weight decay but no
    # gradient clipping, so the search passes `weight_tx` without its clip unless
    # `search.fd_clip`; None: `weight_tx`.
    virtual_weight_tx: optax.GradientTransformation | None = None

    def progress(self, step: Array) -> Array:
        """epoch / (epochs - 1) in [0, 1]: 0 during the first epoch, 1 during the last."""
        epoch = jnp.asarray(step) // self.steps_per_epoch
        return jnp.clip(epoch / max(self.epochs - 1, 1), 0.0, 1.0)

    def linear(self, start: float, end: float) -> Callable[[Array], Array]:
        """A per-epoch linear schedule from `start` (first epoch) to `end` (last epoch)."""
        return lambda step: start + (end - start) * self.progress(step)

    def ramp(self, start: float, end: float) -> Callable[[Array], Array]:
        """start + (end - start) * epoch / epochs: the per-epoch schedules of DARTS-, beta-DARTS
        and SDARTS' code, which reach start + (end - start) (epochs - 1) / epochs in the last
        epoch, one epoch's increment short of `end`."""
        epochs = max(self.epochs, 1)
        return lambda step: (
            start + (end - start) * (jnp.asarray(step) // self.steps_per_epoch) / epochs
        )


def _no_regularizer(alphas: Alphas, step: Array) -> Array:
    del alphas, step
    return jnp.zeros((), jnp.float32)


def _alpha_grad(ctx: Context, fd_eps: float = 0.01) -> bilevel.AlphaGrad:
    if ctx.order == "first":
        return bilevel.first_order()
    if ctx.order in ("second", "finite_difference"):
        if ctx.weight_tx is None:
            raise ValueError(f"order={ctx.order!r} needs the weight optimiser (weight_tx)")
        if ctx.order == "second":
            return bilevel.unrolled(ctx.weight_tx)
        if ctx.learning_rate is None:
            raise ValueError("order='finite_difference' needs the weight learning rate")
        virtual = ctx.virtual_weight_tx or ctx.weight_tx
        return bilevel.finite_difference(virtual, ctx.learning_rate, fd_eps)
    raise ValueError(f"unknown DARTS order {ctx.order!r}; valid: {', '.join(bilevel.ORDERS)}")


def _sum_over_cells(alphas: Alphas, f: Callable[[Array], Array]) -> Array:
    return sum(jnp.sum(f(alphas[c])) for c in relaxations.cell_types(alphas))


# ---------------------------------------------------------------------------------------------
# DARTS and its relaxation variants.


def darts(ctx: Context, *, fd_eps: float = 0.01) -> Strategy:
    """DARTS (Liu et al., ICLR 2019): softmax relaxation; the hypergradient order comes from
    `ctx.order` ('first': Eq. 6 with xi = 0; 'second': exact autodiff through the unrolled weight
    step; 'finite_difference': Eq. 7-8 with epsilon = fd_eps / ||grad||)."""
    return Strategy(
        name="darts",
        mix_weights=relaxations.softmax,
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx, fd_eps),
        regularizer=_no_regularizer,
    )


def gdas(ctx: Context, *, tau_max: float = 10.0, tau_min: float = 0.1) -> Strategy:
    """GDAS (Dong & Yang, CVPR 2019): every forward pass uses exactly one op per edge, sampled by
    hard Gumbel-softmax, with the straight-through gradient of the soft sample; the temperature
    falls linearly per epoch from tau_max to tau_min. Discretised from softmax(alpha)."""
    tau = ctx.linear(tau_max, tau_min)
    return Strategy(
        one_hot=True,
        name="gdas",
        reads_epochs=True,
        mix_weights=lambda alphas, key, step: relaxations.hard_gumbel_softmax(
            alphas, key, tau(step)
        ),
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=_no_regularizer,
    )


def resource_penalty(alphas: Alphas, costs: Mapping[str, np.ndarray]) -> Array:
    """SNAS' log resource penalty at the expected architecture p = softmax(alpha): for every
    mixed edge of every cell, the mean over resources r (parameters, multiply-adds, memory
    access) of log(sum_k p_k cost_k,r); summed over each cell's edges, averaged over the cells of
    each type and summed over the types (the authors' code: normal sum / 6 + reduce sum / 2 for
    their 6 + 2 cells). `costs`: cell type -> (cells, edges, ops, resources)."""
    groups = relaxations.cell_types(alphas)
    resources = next(iter(costs.values())).shape[-1]
    # The per-edge expected costs of a cost table (`hardware`), the one mechanism of dnas'
    # hardware-aware objectives.
    table = hardware.CostTable(
        tuple(f"r{i}" for i in range(resources)),
        {c: np.asarray(costs[c]) for c in groups}, np.zeros(resources),
    )  # fmt: skip
    weights = {c: jax.nn.softmax(alphas[c], axis=-1) for c in groups}
    total = jnp.zeros((), jnp.float32)
    for expected in hardware.expected_row_costs(weights, table).values():
        log_cost = jnp.log(jnp.maximum(expected, jnp.finfo(expected.dtype).tiny))
        total = total + jnp.mean(jnp.sum(jnp.mean(log_cost, -1), -1))
    return total


def snas(
    ctx: Context, *, tau_start: float = 1.0, tau_end: float = 0.03, resource_lambda: float = 0.0
) -> Strategy:
    """SNAS (Xie et al., ICLR 2019): a concrete (Gumbel-softmax) sample of the mixing weights at
    every forward pass, the temperature falling linearly per epoch from tau_start to tau_end (the
    authors' code: 1 -> 0.03). Discretised from softmax(alpha). SNAS trains alphas and weights on
    the same training data (single level); here the alpha step uses the validation split, as
    every strategy of dnas does.

    Resource constraint (`resource_lambda` > 0; the authors' 8-cell search uses 1e-2): the alpha
    objective adds resource_lambda * `resource_penalty`, the log costs (parameters, multiply-adds,
    memory access) of the supernet's ops weighted by softmax(alpha), which is the paper's
    expectation over one-hot architectures (their code weights by the sampled relaxation)."""
    tau = ctx.linear(tau_start, tau_end)
    regularizer = _no_regularizer
    if resource_lambda:
        if ctx.edge_costs is None:
            raise ValueError("snas resource_lambda needs the supernet's op costs (ctx.edge_costs)")
        costs = {c: np.asarray(v) for c, v in ctx.edge_costs().items()}
        regularizer = lambda alphas, step: resource_lambda * resource_penalty(alphas, costs)
    return Strategy(
        name="snas",
        reads_epochs=True,
        mix_weights=lambda alphas, key, step: relaxations.gumbel_softmax(alphas, key, tau(step)),
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=regularizer,
    )


def dirichlet_kl(conc: Array, prior: Array) -> Array:
    """KL(Dir(conc) || Dir(prior)) along the last axis (closed form)."""
    from jax.scipy.special import digamma, gammaln

    c0, p0 = jnp.sum(conc, -1), jnp.sum(prior, -1)
    return (
        gammaln(c0) - jnp.sum(gammaln(conc), -1) - gammaln(p0) + jnp.sum(gammaln(prior), -1)
        + jnp.sum((conc - prior) * (digamma(conc) - digamma(c0)[..., None]), -1)
    )  # fmt: skip


def masked_dirichlet(alphas: Alphas, key: PRNGKey, masks: Mapping[str, Array]) -> MixWeights:
    """A sample of Dir(elu(alpha_S) + 1) over each edge's ops S with mask 1, zeros elsewhere: the
    full Dirichlet sample restricted to S and renormalised (a Dirichlet's aggregation property:
    normalised Gamma variates), so the pathwise gradient is still `jax.random.dirichlet`'s."""
    full = relaxations.dirichlet(alphas, key)
    out = {}
    for c, w in full.items():
        kept = w * masks[c].astype(w.dtype)
        out[c] = kept / jnp.sum(kept, -1, keepdims=True)
    return out


def _masks(space: Space, ops_mask: Mapping[str, Any] | None) -> dict[str, Array]:
    """Cell type -> (E, K) 0/1 float mask (all ones without `ops_mask`)."""
    return {
        c: jnp.asarray(np.asarray(ops_mask[c], np.float32) if ops_mask else np.ones(shape))
        for c, shape in space.alpha_shapes.items()
    }


def masked_softmax(alphas: Alphas, masks: Mapping[str, Array]) -> MixWeights:
    """A softmax over each edge's ops with mask 1; weight 0 for the others."""
    return {
        c: jax.nn.softmax(jnp.where(masks[c] > 0, alphas[c], -jnp.inf), axis=-1)
        for c in relaxations.cell_types(alphas)
    }


def drnas(
    ctx: Context,
    *,
    reg_type: str = "l2",
    reg_scale: float | None = None,
    progressive: bool = False,
    stage_epochs: Any = (25, 25),
    stage_partial_channels: Any = (6, 4),
    keep: Any = (4,),
    ops_mask: Mapping[str, Any] | None = None,
    alphas_init: Mapping[str, Any] | None = None,
) -> Strategy:
    """DrNAS (Chen et al., ICLR 2021): mixing weights are a Dirichlet sample with concentration
    elu(alpha) + 1 at every forward pass (weight and alpha steps), differentiated pathwise
    (implicit reparameterisation). Regulariser: 'l2' is the alpha optimiser's weight decay (the
    authors' default; its scale is search.alpha_weight_decay, and a `reg_scale` is refused);
    'kl' adds reg_scale (default 1e-3) * KL(Dir(elu(alpha) + 1) || Dir(1)) per edge (their
    code then sets the alpha weight decay to 0). Discretised from softmax(alpha), as their code.

    `progressive=True`: DrNAS' progressive scheme (`dnas.progressive.run_drnas` runs the stages:
    `stage_epochs` each, partial channels `stage_partial_channels`, `keep` ops per edge after
    each stage but the last). A stage gets its op set in `ops_mask` (the Dirichlet and the
    softmax then run over the kept ops only) and the previous stage's alphas in `alphas_init`."""
    del stage_epochs, stage_partial_channels, keep  # read by dnas.progressive.run_drnas
    if reg_type not in ("kl", "l2"):
        raise ValueError(f"unknown DrNAS reg_type {reg_type!r}; valid: kl, l2")
    if reg_type == "l2" and reg_scale is not None:
        raise ValueError(
            "DrNAS reg_type='l2' is the alpha optimiser's weight decay: set "
            "--config.search.alpha_weight_decay instead of strategy_args.reg_scale"
        )
    reg_scale = 1e-3 if reg_scale is None else reg_scale
    masks = _masks(ctx.space, ops_mask)

    def kl(alphas: Alphas, step: Array) -> Array:  # over every op, masked or not (their code)
        del step
        f = lambda a: dirichlet_kl(relaxations.concentration(a), jnp.ones_like(a))
        return reg_scale * _sum_over_cells(alphas, f)

    def init_alphas(space: Space, key: PRNGKey, scale: float) -> Alphas:
        del key, scale
        return {c: jnp.asarray(np.asarray(alphas_init[c], np.float32)) for c in space.groups}

    return Strategy(
        name="drnas",
        mix_weights=lambda alphas, key, step: masked_dirichlet(alphas, key, masks),
        final_weights=lambda alphas, key=None, step=None: masked_softmax(alphas, masks),
        alpha_grad=_alpha_grad(ctx),
        regularizer=kl if reg_type == "kl" else _no_regularizer,
        init_alphas=init_alphas if alphas_init is not None else None,
    )


def _without_none(space: Space) -> np.ndarray:
    """1 for every op but `none` (FairDARTS' code has no `none` op)."""
    keep = np.ones(space.num_ops, np.float32)
    if "none" in space.ops:
        keep[space.op_index("none")] = 0.0
    return keep


def zero_one_loss(alphas: Alphas, keep: np.ndarray | None = None) -> Array:
    """FairDARTS' zero-one loss, -mean((sigmoid(alpha) - 0.5)^2) over every op (where `keep` is
    1) of every edge and cell: lowest when each weight sits at 0 or 1."""
    cells = relaxations.cell_types(alphas)
    keep = np.ones(alphas[cells[0]].shape[-1]) if keep is None else keep
    total = sum(jnp.sum(jnp.square(jax.nn.sigmoid(alphas[c]) - 0.5) * keep) for c in cells)
    count = sum(alphas[c].shape[0] for c in cells) * keep.sum()
    return -total / count


def fair_darts(ctx: Context, *, zero_one_weight: float = 10.0) -> Strategy:
    """FairDARTS (Chu et al., ECCV 2020): independent sigmoid weights (ops do not compete, so
    skip connections cannot win by exclusion), alphas initialised to 0 (weights 0.5), and a
    zero-one loss weighted by zero_one_weight (10) in the alpha objective that pushes every
    weight towards 0 or 1. `none` is left out (weight 0), as the authors' space has no `none`.
    Discretised by the DARTS rule on the sigmoids (top-2 edges, best op); the authors' default
    also drops kept edges whose weight is below 0.85, which leaves nodes with fewer than two
    inputs: dnas genotypes have exactly two, so that step is not applied."""
    keep = _without_none(ctx.space)

    def weights(alphas, key=None, step=None):
        del key, step
        return {c: w * keep.astype(w.dtype) for c, w in relaxations.sigmoid(alphas).items()}

    def init_alphas(space: Space, key: PRNGKey, scale: float) -> Alphas:
        del key, scale
        return {c: jnp.zeros(shape, jnp.float32) for c, shape in space.alpha_shapes.items()}

    return Strategy(
        name="fair_darts",
        mix_weights=weights,
        final_weights=weights,
        alpha_grad=_alpha_grad(ctx),
        regularizer=lambda alphas, step: zero_one_weight * zero_one_loss(alphas, keep),
        init_alphas=init_alphas,
    )


def darts_minus(ctx: Context, *, beta_start: float = 1.0, beta_end: float = 0.0) -> Strategy:
    """DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection on every edge of both cell
    types, weighted by beta = beta_start + (beta_end - beta_start) * epoch / epochs (the authors'
    linear decay: 1 -> 1/epochs in the last epoch); not an architecture choice. Implemented as
    beta added to the `skip_connect` mixing weight, so the auxiliary path is the edge's skip op:
    the identity, or on stride-2 edges the skip op's FactorizedReduce (the authors give the
    auxiliary path its own FactorizedReduce there). Discretised from softmax(alpha)."""
    space = ctx.space
    space.check_op("skip_connect")
    skip = jax.nn.one_hot(space.op_index("skip_connect"), space.num_ops)
    beta = ctx.ramp(beta_start, beta_end)

    def mix_weights(alphas, key, step):
        return {
            c: w + beta(step).astype(w.dtype) * skip.astype(w.dtype)
            for c, w in relaxations.softmax(alphas).items()
        }

    return Strategy(
        name="darts_minus",
        reads_epochs=True,
        mix_weights=mix_weights,
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=_no_regularizer,
    )


def beta_decay_loss(alphas: Alphas) -> Array:
    """beta-DARTS' Beta-Decay term: the mean over edges of logsumexp(alpha_edge) (the smooth
    maximum of the edge's alphas, whose gradient is softmax(alpha): it decays the softmax-
    activated alphas), summed over cell types."""
    return _sum_over_cells(alphas, lambda a: jnp.mean(jax.nn.logsumexp(a, axis=-1)))


def beta_darts(ctx: Context, *, lambda_max: float = 50.0) -> Strategy:
    """beta-DARTS (Ye et al., CVPR 2022): DARTS plus lambda * Beta-Decay loss in the alpha
    objective only, lambda = lambda_max * epoch / epochs (the authors' NAS-Bench-201 code:
    50 * epoch / 100)."""
    lam = ctx.ramp(0.0, lambda_max)
    return Strategy(
        name="beta_darts",
        reads_epochs=True,
        mix_weights=relaxations.softmax,
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=lambda alphas, step: lam(step) * beta_decay_loss(alphas),
    )


# ---------------------------------------------------------------------------------------------
# Perturbation of the weight step (SDARTS).


def clip_rows(mix: MixWeights) -> MixWeights:
    """SDARTS' `clip`: weights clamped to [0, 1], each edge renormalised to sum 1 (an all-zero
    edge becomes one-hot at its largest entry before clamping)."""
    out = {}
    for c, w in mix.items():
        clamped = jnp.clip(w, 0.0, 1.0)
        total = jnp.sum(clamped, -1, keepdims=True)
        fallback = jax.nn.one_hot(jnp.argmax(w, -1), w.shape[-1], dtype=w.dtype)
        out[c] = jnp.where(total > 0, clamped / jnp.where(total > 0, total, 1.0), fallback)
    return out


def _uniform_like(key: PRNGKey, mix: MixWeights, eps: Array) -> MixWeights:
    keys = jax.random.split(key, len(mix))
    return {
        c: jax.random.uniform(k, w.shape, w.dtype, -1.0, 1.0) * eps.astype(w.dtype)
        for (c, w), k in zip(mix.items(), keys, strict=True)
    }


def random_smoothing(epsilon: Callable[[Array], Array]) -> WeightMix:
    """SDARTS-RS: the weight step sees clip(mix + U(-eps, eps)), noise per op and edge."""

    def weight_mix(loss_of_mix, mix, key, step, alphas=None):
        del loss_of_mix, alphas
        noisy = jax.tree.map(jnp.add, mix, _uniform_like(key, mix, epsilon(step)))
        return jax.lax.stop_gradient(clip_rows(noisy))

    return weight_mix


def adversarial(epsilon: Callable[[Array], Array], steps: int) -> WeightMix:
    """SDARTS-ADV: the weight step sees the mixing weights moved by `steps` steps of L-inf PGD
    that maximise the training loss on the same batch: random start in the eps-ball, step
    2 eps / steps along the gradient's sign, projection onto the ball around mix and `clip_rows`
    after each step; if the attack ends below the starting loss, the unperturbed weights are used
    (as the authors' code)."""

    def weight_mix(loss_of_mix, mix, key, step, alphas=None):
        del alphas
        mix = jax.lax.stop_gradient(mix)
        eps = epsilon(step)
        lr = 2.0 * eps / steps

        def project(m):
            m = {c: mix[c] + jnp.clip(m[c] - mix[c], -eps, eps).astype(m[c].dtype) for c in m}
            return clip_rows(m)

        def pgd(_, m):
            g = jax.grad(loss_of_mix)(m)
            return project({c: m[c] + (lr * jnp.sign(g[c])).astype(m[c].dtype) for c in m})

        start = project(jax.tree.map(jnp.add, mix, _uniform_like(key, mix, eps)))
        attacked = jax.lax.fori_loop(0, steps, pgd, start)
        better = loss_of_mix(attacked) >= loss_of_mix(mix)
        chosen = jax.tree.map(lambda a, m: jnp.where(better, a, m), attacked, mix)
        return jax.lax.stop_gradient(chosen)

    return weight_mix


def sdarts(
    ctx: Context,
    *,
    mode: str = "rs",
    epsilon_start: float = 0.03,
    epsilon_end: float = 0.3,
    pgd_steps: int = 7,
) -> Strategy:
    """SDARTS (Chen & Hsieh, ICML 2020): DARTS whose weight step trains on perturbed softmax
    weights, random ('rs') or adversarial ('adv'); eps = epsilon_start + (epsilon_end -
    epsilon_start) * epoch / epochs (authors' code: 0.03 -> 0.3). The alpha step is DARTS'."""
    epsilon = ctx.ramp(epsilon_start, epsilon_end)
    if mode == "rs":
        weight_mix = random_smoothing(epsilon)
    elif mode == "adv":
        weight_mix = adversarial(epsilon, pgd_steps)
    else:
        raise ValueError(f"unknown SDARTS mode {mode!r}; valid: rs, adv")
    return darts(ctx)._replace(name=f"sdarts_{mode}", weight_mix=weight_mix, reads_epochs=True)


# ---------------------------------------------------------------------------------------------
# PC-DARTS edge normalisation.


def edge_normalisation(space: Space, beta_E: Array) -> Array:
    """PC-DARTS (Xu et al., ICLR 2020) edge weights: a softmax of the edge betas over the incoming
    edges of each intermediate node (`space.node_rows`), in alpha row order."""
    out = jnp.ones_like(beta_E)
    for rows in space.node_rows:
        rows = np.array(rows)
        out = out.at[rows].set(jax.nn.softmax(beta_E[rows]))
    return out


def pc_darts(ctx: Context) -> Strategy:
    """PC-DARTS' edge normalisation: alphas carry a beta per edge ("beta/<cell>"); the mixing
    weight of op k on edge e is softmax(beta over the node's incoming edges)_e * softmax(alpha_e)_k,
    so an edge's weights sum to its normalised beta, which weighs the whole edge (also the
    channels that bypass the ops) and its strength at discretisation. Partial channel connections
    are the supernet's (`search.partial_channels`, 4 in the PC-DARTS configs)."""
    space = ctx.space
    if not space.node_rows:
        raise ValueError(f"pc_darts normalises the edges into each node; space {space.name!r} "
                         "has no nodes (Space.node_rows): use another strategy, e.g. darts "
                         "with --config.search.partial_channels")  # fmt: skip

    def init_alphas(space: Space, key: PRNGKey, scale: float) -> Alphas:
        k_alpha, k_beta = jax.random.split(key)
        alphas = space.init_alphas(k_alpha, scale)
        keys = jax.random.split(k_beta, len(space.groups))
        for cell, k in zip(space.groups, keys, strict=True):
            rows = space.alpha_shapes[cell][0]
            alphas[f"beta/{cell}"] = scale * jax.random.normal(k, (rows,), jnp.float32)
        return alphas

    def weights(alphas, key=None, step=None):
        del key, step
        return {
            c: w * edge_normalisation(space, alphas[f"beta/{c}"])[:, None].astype(w.dtype)
            for c, w in relaxations.softmax(alphas).items()
        }

    return Strategy(
        name="pc_darts",
        mix_weights=weights,
        final_weights=weights,
        alpha_grad=_alpha_grad(ctx),
        regularizer=_no_regularizer,
        init_alphas=init_alphas,
    )


# ---------------------------------------------------------------------------------------------
# Implicit hypergradients and baselines.


def idarts(ctx: Context, *, neumann_steps: int = 2, neumann_lr: float | None = None) -> Strategy:
    """iDARTS (Zhang et al., ICML 2021): the implicit-function-theorem hypergradient with the
    inverse training-loss Hessian approximated by a Neumann series of `neumann_steps` + 1 terms
    built from exact Hessian-vector products, step `neumann_lr` (default: the weight learning
    rate at the current step). The authors' code uses a diagonal surrogate of the Hessian and 5
    inner weight steps instead; K = 2 (3 terms) as there."""
    lr = neumann_lr if neumann_lr is not None else ctx.learning_rate
    if lr is None:
        raise ValueError("idarts needs neumann_lr or the weight learning rate")
    return darts(ctx)._replace(name="idarts", alpha_grad=bilevel.implicit(lr, neumann_steps))


def pdarts(
    ctx: Context,
    *,
    ops_mask: Mapping[str, Any] | None = None,
    stage_layers: Any = (5, 11, 17),
    keep: Any = (5, 3, 1),
    max_skips: int = 2,
    dropout_rate: Any = (0.0, 0.0, 0.0),
    skip_dropout: float = 0.0,
    dropout_warmup_epochs: int = 0,
) -> Strategy:
    """One stage of P-DARTS (Chen et al., ICCV 2019): DARTS whose softmax runs over each edge's
    remaining ops only (`ops_mask`, cell type -> (E, K) of 0/1; the others get weight 0).
    `dnas.progressive.run_pdarts` drives the stages (`stage_layers` cells each, `keep` ops per
    edge after each, at most `max_skips` skip connections in the final normal cell); a search
    with `strategy='pdarts'` and no `ops_mask` runs all of them.

    Search-space regularisation: dropout on the identity skip connections at rate
    `skip_dropout` (this stage's `dropout_rate`, set by the driver), in both steps, decaying per
    epoch as the authors' code: p (E - e - 1) / E during the `dropout_warmup_epochs`
    weights-only epochs, then p exp(-0.2 (e - warm-up))."""
    del stage_layers, keep, max_skips, dropout_rate  # read by dnas.progressive.run_pdarts
    masks = _masks(ctx.space, ops_mask)

    def weights(alphas, key=None, step=None):
        del key, step
        return masked_softmax(alphas, masks)

    def dropout(step: Array) -> Array:
        epoch = jnp.asarray(step) // ctx.steps_per_epoch
        warm = skip_dropout * (ctx.epochs - epoch - 1) / ctx.epochs
        later = skip_dropout * jnp.exp(-0.2 * (epoch - dropout_warmup_epochs))
        return jnp.where(epoch < dropout_warmup_epochs, warm, later).astype(jnp.float32)

    return darts(ctx)._replace(
        name="pdarts", mix_weights=weights, final_weights=weights,
        skip_dropout=dropout if skip_dropout > 0 else None,
        reads_epochs=skip_dropout > 0 and dropout_warmup_epochs > 0,
    )  # fmt: skip


def random_ws(ctx: Context) -> Strategy:
    """Random search with weight sharing (Li & Talwalkar, UAI 2019), training phase: every step
    trains the shared weights of one uniformly random architecture (`space.sample_mix`); alphas
    are not learned. The architectures are then ranked by
    validation accuracy with the shared weights: `search.selection` must be `random` or
    `evolution`."""
    if ctx.space.sample_mix is None:
        raise ValueError(f"random_ws samples architectures inside jit; space {ctx.space.name!r} "
                         "has no sample_mix: give the space one (Space.sample_mix) or use "
                         "another strategy")  # fmt: skip
    zero_grad = lambda loss_fn, params, alphas, *a: (jax.tree.map(jnp.zeros_like, alphas), {})
    sample = ctx.space.sample_mix
    return Strategy(
        name="random_ws",
        mix_weights=lambda alphas, key, step: sample(key, alphas),
        final_weights=relaxations.softmax,
        alpha_grad=zero_grad,
        regularizer=_no_regularizer,
        update_alphas=False,
        one_hot=True,
    )


# ---------------------------------------------------------------------------------------------
# Hardware-aware searches of chains of blocks: FBNet (Gumbel-softmax) and ProxylessNAS (binary
# gates). Their latency objectives are `config.hardware`'s, not the strategies'.


def fbnet(ctx: Context, *, tau_start: float = 5.0, tau_decay: float = 0.045) -> Strategy:
    """FBNet's DNAS (Wu et al., CVPR 2019, Eq. 5-6): every forward pass (weight and alpha
    steps) mixes each row's ops with a Gumbel-softmax sample of softmax(alpha), temperature
    tau = tau_start * exp(-tau_decay * epoch) (the paper: 5.0, annealed by exp(-0.045) every
    epoch, from the run's first epoch); all of a row's ops are computed. Discretised from
    softmax(alpha) by the space's rule (the paper samples architectures from it instead).

    Weights-only warm-up epochs (the FBNet ports train the weights alone for their first 10-20
    epochs; the paper gives none) are `search.alpha_warmup_epochs`, as for PC-DARTS: the
    temperature keeps falling during them. The latency term CE * a * log(LAT)^b is the search's
    hardware objective (`config.hardware`, objective `fbnet`, `hardware.sampled` for the
    paper's expectation under the Gumbel sample)."""
    if tau_start <= 0 or tau_decay < 0:
        raise ValueError(f"tau_start must be > 0 and tau_decay >= 0, got {tau_start}, {tau_decay}")

    def tau(step: Array) -> Array:
        epoch = jnp.asarray(step) // ctx.steps_per_epoch
        return tau_start * jnp.exp(-tau_decay * epoch.astype(jnp.float32))

    return Strategy(
        name="fbnet",
        mix_weights=lambda alphas, key, step: relaxations.gumbel_softmax(alphas, key, tau(step)),
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=_no_regularizer,
    )


PROXYLESS_MODES = ("two", "full")


def _hider(space: Space) -> Callable[[Alphas], Alphas]:
    """alphas -> alphas with -inf at the ops that are not candidates of a row (`Space.mask`),
    as `masked` gives `mix_weights`: the functions that `masked` does not wrap (`weight_mix`,
    `after_alpha_update`) apply it themselves (idempotent)."""
    if space.mask is None:
        return lambda alphas: alphas
    where = {g: jnp.asarray(np.asarray(m, bool)) for g, m in space.mask.items()}
    return lambda alphas: {
        k: jnp.where(where[k], a, -jnp.inf) if k in where else a for k, a in alphas.items()
    }


def validation_mix_key(order: str, key: PRNGKey) -> PRNGKey:
    """The relaxation key of the validation loss in the alpha step whose key is `key`:
    `loss_fn(..., k)` mixes with `search_step.loss_keys(k)[1]` (= split(k)[1]), where k is the
    step's alpha key itself at first order and its split(key)[1] for the unrolled and
    finite-difference orders (`bilevel`: k_train, k_val = split(key)). Tested against both."""
    if order != "first":
        key = jax.random.split(key)[1]
    return jax.random.split(key)[1]


def proxyless_paths(
    alphas: Alphas, key: PRNGKey, mode: str, zero: int | None = None
) -> dict[str, tuple[Array, Array]]:
    """Alpha group -> (paths (rows, P) int32, live (rows,) bool) of ProxylessNAS' alpha step,
    from `alphas` (masked ops at -inf) and the step's relaxation key. mode 'two': per row two
    distinct ops drawn from softmax(alpha) without replacement, then the active one of the two
    drawn from their renormalised probabilities q; paths = (active, inactive). mode 'full': the
    active op drawn from softmax(alpha), then every other op (P = ops). `live` is False where
    the active op is `zero` (column `zero`; the authors' code gives such a block, which then
    skips its mixed op, no architecture gradient and no update)."""
    groups = relaxations.cell_types(alphas)
    out = {}
    for g, k in zip(groups, jax.random.split(key, len(groups)), strict=True):
        alpha_RxK = jax.lax.stop_gradient(alphas[g])
        rows, ops = alpha_RxK.shape
        k_paths, k_active = jax.random.split(k)
        if mode == "two":
            pair_Rx2 = relaxations.sample_paths(alpha_RxK, k_paths, 2)
            q_Rx2 = jax.nn.softmax(jnp.take_along_axis(alpha_RxK, pair_Rx2, -1), -1)
            first = jax.random.bernoulli(k_active, q_Rx2[:, 0])
            paths = jnp.where(first[:, None], pair_Rx2, pair_Rx2[:, ::-1])
        else:
            active_R = jax.random.categorical(k_active, alpha_RxK, -1)
            # active first, then the other ops in column order (a stable sort on "not active")
            not_active = jnp.arange(ops)[None, :] != active_R[:, None]
            paths = jnp.argsort(not_active, axis=-1, stable=True).astype(jnp.int32)
        live = jnp.ones((rows,), bool) if zero is None else paths[:, 0] != zero
        out[g] = (paths, live)
    return out


def proxylessnas(
    ctx: Context, *, mode: str = "two", alpha_every: int = 5, skip_zero: bool = True
) -> Strategy:
    """ProxylessNAS (Cai et al., ICLR 2019; mit-han-lab/proxylessnas `search/modules/mix_op.py`)
    with binary gates: every forward pass computes only sampled paths.

    Weight step: one op per row drawn from softmax(alpha) (`weight_mix`: one-hot weights and
    `"active/<group>"` of shape (rows, 1): the supernet computes that op only).
    Alpha step, mode 'two' (the paper's Sec. 3.2.1): per row two ops drawn without replacement,
    the active one of them by their renormalised probabilities q, gates g one-hot on it; the
    supernet computes both (`"active/<group>"` (rows, 2), active first), and the alpha gradient
    is Eq. 4 restricted to the pair (`relaxations.binary_gates`, a custom VJP, so any
    hypergradient composes with it): dL/dalpha_i = sum_j dL/dg_j q_j (delta_ij - q_i), 0 for
    the other alphas. `after_alpha_update` then shifts both updated alphas of each pair by
    log(sum exp new pair) - log(sum exp old pair), so the pair's total probability, and with it
    every other op's, is what it was (the authors' `rescale_updated_arch_param`; exact for the
    other ops when their update is 0: Adam with b1 = 0, the authors' setting, and no weight
    decay). Mode 'full': the gates over every op, all paths computed, Eq. 4 over every op, no
    rescaling. The released code's default, 'full_v2', is 'full' with the other paths computed
    in the backward pass only (the same gradient).

    What the gradient estimates (tests/test_hardware_strategies.py): for a loss linear in the
    gates, L = sum_j g_j l_j, mode 'full' gives p_i (l_i - sum_k p_k l_k), the exact gradient of
    E_{g ~ p}[L], for every sample. Mode 'two' gives per pair {a, b}: q_a q_b (l_a - l_b) for
    a, the opposite for b; its expectation sum_b P({i, b}) p_i p_b / (p_i + p_b)^2 (l_i - l_b)
    (P({a, b}) = p_a p_b (1 / (1 - p_a) + 1 / (1 - p_b))) against the exact
    sum_b p_i p_b (l_i - l_b): the same pairwise terms with other positive weights, so exact
    for 2-op rows, K / (2 (K - 1)) times the exact gradient at uniform p over K ops, biased in
    direction otherwise. With the rescaling, each sampled update moves probability only within
    its pair, from the worse op to the better: to first order in the step eta (SGD),
    dp_a = -2 eta p_a^2 p_b^2 (l_a - l_b) / (p_a + p_b)^3 = -dp_b, so E_p[L] changes by
    -2 eta p_a^2 p_b^2 (l_a - l_b)^2 / (p_a + p_b)^3 <= 0 for every sample.

    Rows whose active op is `zero` (`skip_zero`, where the space has that op) keep their alphas
    (the authors' code: no gradient, no update). `alpha_every`: the alphas are updated every
    that many steps (their `grad_update_arch_param_every`, 5). Hypergradient orders: mode 'two'
    needs 'first' (the unrolled and finite-difference orders evaluate the loss with two keys,
    so two pairs per row would get gradient and the rescaling has no pair); mode 'full' runs
    with every order (Eq. 4 through each evaluation's gates; its zero rule follows the
    validation loss's sample). Discretised from softmax(alpha) by the space's rule; one op per
    row in value (`one_hot`), but `search.single_op` would drop the inactive path's gate
    gradient of mode 'two' in cell spaces: chains compute the paths of `"active/<group>"`."""
    if mode not in PROXYLESS_MODES:
        raise ValueError(f"unknown proxylessnas mode {mode!r}; valid: {', '.join(PROXYLESS_MODES)}")
    if mode == "two" and ctx.order != "first":
        raise ValueError(
            f"proxylessnas mode='two' needs order='first' (got {ctx.order!r}): the "
            "unrolled and finite-difference orders evaluate the loss with two keys, so two "
            "pairs per row would get gradient and the pair rescaling is undefined; use "
            "order='first' or strategy_args.mode='full'"
        )
    if alpha_every < 1:
        raise ValueError(f"proxylessnas alpha_every must be >= 1, got {alpha_every}")
    space, order = ctx.space, ctx.order
    hide = _hider(space)
    zero = space.op_index("zero") if skip_zero and "zero" in space.ops else None

    def mix_weights(alphas, key, step):
        del step
        alphas = hide(alphas)
        out = {}
        for g, (paths, live) in proxyless_paths(alphas, key, mode, zero).items():
            out[g] = relaxations.binary_gates(alphas[g], paths, live)
            if mode == "two":
                out[f"active/{g}"] = paths
        return out

    def weight_mix(loss_of_mix, mix, key, step, alphas=None):
        del loss_of_mix, mix, step
        alphas = hide(alphas)
        groups = relaxations.cell_types(alphas)
        out = {}
        for g, k in zip(groups, jax.random.split(key, len(groups)), strict=True):
            a = jax.lax.stop_gradient(alphas[g])
            active_R = jax.random.categorical(k, a, -1).astype(jnp.int32)
            out[g] = jax.nn.one_hot(active_R, a.shape[-1], dtype=a.dtype)
            out[f"active/{g}"] = active_R[:, None]
        return out

    def after_alpha_update(before, after, key, step):
        del step
        hidden_before, hidden_after = hide(before), hide(after)
        sampled = proxyless_paths(hidden_before, validation_mix_key(order, key), mode, zero)
        kept = dict(after)
        for g, (paths, live) in sampled.items():
            new = after[g]
            if mode == "two":
                old_pair = jnp.take_along_axis(hidden_before[g], paths, -1)
                new_pair = jnp.take_along_axis(hidden_after[g], paths, -1)
                offset = jax.nn.logsumexp(new_pair, -1) - jax.nn.logsumexp(old_pair, -1)
                in_pair = jnp.zeros(new.shape, bool).at[
                    jnp.arange(new.shape[0])[:, None], paths
                ].set(True)  # fmt: skip
                in_pair = in_pair & jnp.isfinite(hidden_before[g])
                new = jnp.where(in_pair, new - offset[:, None].astype(new.dtype), new)
            kept[g] = jnp.where(live[:, None], new, before[g])
        return kept

    needs_after = mode == "two" or zero is not None
    return Strategy(
        name="proxylessnas",
        mix_weights=mix_weights,
        final_weights=relaxations.softmax,
        alpha_grad=_alpha_grad(ctx),
        regularizer=_no_regularizer,
        weight_mix=weight_mix,
        one_hot=True,
        alpha_every=alpha_every,
        after_alpha_update=after_alpha_update if needs_after else None,
    )


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "darts": darts,
    "pc_darts": pc_darts,
    "gdas": gdas,
    "snas": snas,
    "drnas": drnas,
    "fair_darts": fair_darts,
    "darts_minus": darts_minus,
    "beta_darts": beta_darts,
    "sdarts": sdarts,
    "idarts": idarts,
    "pdarts": pdarts,
    "random_ws": random_ws,
    "fbnet": fbnet,
    "proxylessnas": proxylessnas,
}


def get(name: str) -> Callable[..., Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(
            f"unknown search strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}"
        ) from None


def arguments(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments of strategy `name`'s factory (what `config.strategy_args` may set),
    by name, with their defaults."""
    return {
        p.name: p for p in inspect.signature(get(name)).parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY
    }  # fmt: skip


def check_args(name: str, args: Mapping[str, Any]) -> None:
    """A ValueError listing the arguments strategy `name` takes unless it takes every one of
    `args` (checked by `build`, and by `configlib.validate` before anything compiles)."""
    valid = arguments(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ValueError(
            f"strategy {name!r} takes no argument {', '.join(unknown)}; "
            f"valid strategy_args: {', '.join(valid) or '(none)'}"
        )


def build(name: str, ctx: Context, args: Mapping[str, Any] | None = None) -> Strategy:
    """`STRATEGIES[name](ctx, **args)`; an argument the factory does not take is a ValueError
    listing the ones it does."""
    args = dict(args or {})
    check_args(name, args)
    strategy = get(name)(ctx, **args)
    return strategy if ctx.space.mask is None else masked(strategy, ctx.space.mask)


def masked(strategy: Strategy, mask: Mapping[str, np.ndarray]) -> Strategy:
    """`strategy` on a space whose rows have different candidates (`Space.mask`): the alphas of
    ops that are not candidates of a row enter every relaxation as -inf, so their mixing weight
    is exactly 0 (softmax, Gumbel samples, sigmoid) and their alphas get no gradient."""
    where = {g: jnp.asarray(np.asarray(m, bool)) for g, m in mask.items()}

    def hide(alphas: Alphas) -> Alphas:
        return {k: jnp.where(where[k], a, -jnp.inf) if k in where else a for k, a in alphas.items()}

    mix, final = strategy.mix_weights, strategy.final_weights
    return strategy._replace(
        mix_weights=lambda alphas, *args, **kwargs: mix(hide(alphas), *args, **kwargs),
        final_weights=lambda alphas, *args, **kwargs: final(hide(alphas), *args, **kwargs),
    )
