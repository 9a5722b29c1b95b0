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
    return get(name)(ctx, **args)
