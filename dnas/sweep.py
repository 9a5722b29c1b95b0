"""Many searches as one program: the search step `vmap`ped over members.

A sweep's members are the product of seeds and the values of one step hyper-parameter
(`search_step.HPARAMS`, e.g. `search.alpha_lr`), given in the config so that `config.json` records
them and a resumed sweep is the same sweep:

    dnas sweep --config.space=nb201 --config.sweep.seeds=0-7
    dnas sweep --config.sweep.seeds=0,1 --config.sweep.param=search.alpha_weight_decay \\
        --config.sweep.param_values=1e-3,1e-2

Every member has its own weights, alphas, optimiser states, PRNG stream and data order (those of
a single search with its seed), stacked along a leading axis; the hyper-parameter enters the step
as a traced array. One compilation serves all members, and member i ends where `dnas search` with
member i's seed and value ends (up to float summation order: batched convolutions sum in another
order). This suits spaces whose supernet leaves the device under-used (NAS-Bench-201; a DARTS
supernet at CIFAR size already fills a device); a sweep runs on one device (`num_devices` is not
used). Outputs: `m<i>/genotype.json`, `m<i>/alphas.npz`,
and `sweep.json` listing members with their genotypes.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dnas import checkpoint, configlib, data, loop, metrics, search_step
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype


@dataclasses.dataclass(frozen=True)
class Member:
    seed: int
    value: float | None = None  # of the swept hyper-parameter, if any


def members(config: ml_collections.ConfigDict) -> tuple[str, list[Member]]:
    """(swept hyper-parameter name in `search_step.HPARAMS` or "", members) of `config.sweep`."""
    sw = config.sweep
    seeds = configlib.parse_seeds(sw.seeds) or [config.seed]
    if not sw.param:
        if sw.param_values:
            raise configlib.ConfigError("sweep.param_values is set but sweep.param is not")
        return "", [Member(s) for s in seeds]
    name = sw.param.removeprefix("search.")
    if name not in search_step.HPARAMS:
        raise configlib.ConfigError(
            f"sweep.param={sw.param!r} cannot be swept inside one program; valid: "
            + ", ".join(f"search.{k}" for k in search_step.HPARAMS)
        )
    try:
        values = [float(v) for v in sw.param_values.split(",") if v.strip()]
    except ValueError:
        raise configlib.ConfigError(
            f"sweep.param_values={sw.param_values!r}: expected comma-separated numbers"
        ) from None
    if not values:
        raise configlib.ConfigError(f"sweep.param={sw.param!r} needs sweep.param_values=V1,V2,...")
    return name, [Member(s, v) for s in seeds for v in values]


def member_config(config: ml_collections.ConfigDict, name: str, m: Member):
    """The single-search config equivalent to member `m`."""
    assignments = [f"seed={m.seed}"] + ([f"search.{name}={m.value!r}"] if name else [])
    return configlib.override(config, assignments)


def make_sweep_step(config, su: search_step.SearchSetup, name: str, values):
    """step(states, train_batches, val_batches) -> (states, metrics): the search step of every
    member, vmapped; metrics are per member (`m<i>/...`) and their mean (`mean/...`)."""
    values = jnp.asarray(values, jnp.float32)

    def member_step(state, train_batch, val_batch, value):
        hparams = {name: value} if name else {}
        spe = su.steps_per_epoch
        parts = search_step.make_step_parts(config, su.model, su.info, spe, **hparams)
        return parts[-1](state, train_batch, val_batch)

    def step(states, train_batches, val_batches):
        states, m = jax.vmap(member_step)(states, train_batches, val_batches, values)
        out = {f"m{i}/{k}": v[i] for k, v in m.items() for i in range(values.shape[0])}
        return states, out | {f"mean/{k}": v.mean() for k, v in m.items()}

    return step


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _stacked_batches(sources_and_seeds, batch_size: int, start: int):
    iters = [
        data.batches(src, batch_size, seed=seed, start_step=start)
        for src, seed in sources_and_seeds
    ]
    for group in zip(*iters, strict=False):
        yield {k: np.stack([b[k] for b in group]) for k in group[0]}


@workdir_lib.exclusive
def run(config: ml_collections.ConfigDict, workdir: str) -> list[Genotype]:
    """Runs the sweep in `config.sweep` into `workdir` (resumable); returns members' genotypes."""
    clock = loop.Clock()
    configlib.validate(config)
    name, ms = members(config)
    s = config.search
    ignored = {
        "search.selection": s.selection, "search.early_stop": s.early_stop,
        "search.hessian_every_epochs": s.hessian_every_epochs,
        "search.explain_every_epochs": s.explain_every_epochs,
        "search.teacher (distillation)": bool(s.teacher) and s.kd_weight > 0,
        "search.sgas": s.sgas,
        "strategy=pdarts (stages)": config.strategy == "pdarts",
        "strategy=drnas with progressive (stages)": config.strategy == "drnas"
        and bool(config.strategy_args.get("progressive")),
    }  # fmt: skip
    for key, value in ignored.items():
        if value:
            raise configlib.ConfigError(
                f"dnas sweep runs the plain search loop of every member; {key} is not supported "
                "there: run those members with dnas search"
            )
    loop.enable_compilation_cache(config.compilation_cache_dir)
    workdir = configlib.prepare_workdir(workdir, config, "sweep")
    su = search_step.setup(config, autotune_prior=workdir_lib.recorded_autotune(workdir, "search"))
    workdir_lib.record_autotune(workdir, "search", su.autotune)
    states = _stack([search_step.create_state(member_config(config, name, m), su) for m in ms])
    ckpt = checkpoint.Checkpointer(workdir)
    states = loop.resume(ckpt, states, clock)
    start = int(states.step[0])
    if su.text is None:
        train = _stacked_batches([(su.weights_source, m.seed) for m in ms], s.batch_size, start)
        val = _stacked_batches([(su.alphas_source, m.seed + 1) for m in ms], s.batch_size, start)
        batches = zip(train, val, strict=False)
    else:  # a language model: each member's segments drawn with its seed
        from dnas import lm

        batches = lm.stacked_search_batches(su.text, [m.seed for m in ms], start)
    step = make_sweep_step(config, su, name, [m.value or 0.0 for m in ms])
    step_fn, compiled_record, batches = loop.compile_on_first(
        step, f"sweep step ({len(ms)} members)", config.progress, states, batches, clock=clock,
    )  # fmt: skip
    writer = metrics.MetricWriter(workdir)
    writer.write_scalars(start, {f"search/{k}": v for k, v in compiled_record.items()})

    def final_genotypes(states) -> list[Genotype]:
        weights = jax.device_get(jax.vmap(su.strategy.final_weights)(states.alphas))
        return [
            su.strategy.select(su.space, jax.tree.map(lambda w, i=i: w[i], weights))
            for i in range(len(ms))
        ]

    def on_epoch_end(states, step: int) -> None:
        writer.write_scalars(step, {"epoch": step // su.steps_per_epoch})
        for i, geno in enumerate(final_genotypes(states)):
            writer.write_text(step, f"genotype/m{i}", geno.to_string())

    states = loop.run(
        config, step_fn=step_fn, state=states, batches=batches,
        start=start, total_steps=su.total_steps, steps_per_epoch=su.steps_per_epoch, ckpt=ckpt,
        writer=writer, desc=f"sweep x{len(ms)}",
        postfix=lambda m: {"loss": f"{m['mean/train/loss']:.3f}"}, on_epoch_end=on_epoch_end,
        clock=clock,
    )  # fmt: skip
    genotypes = final_genotypes(states)
    alphas = jax.device_get(states.alphas)
    summary = []
    for i, (m, geno) in enumerate(zip(ms, genotypes, strict=True)):
        out = os.path.join(workdir, f"m{i}")
        os.makedirs(out, exist_ok=True)
        geno.save(os.path.join(out, workdir_lib.GENOTYPE))
        member_alphas = {k: v[i] for k, v in alphas.items()}
        workdir_lib.save_arrays(os.path.join(out, workdir_lib.ALPHAS), member_alphas)
        row = {"member": i, "seed": m.seed, "genotype": geno.to_string()}
        summary.append(row | ({f"search.{name}": m.value} if name else {}))
    text = json.dumps({"members": summary}, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(workdir, "sweep.json"), text)
    # The sums of every process that ran the sweep (`loop.Clock`), as a search records them.
    writer.write_scalars(int(states.step[0]), clock.scalars("search"))
    writer.close()
    ckpt.close()
    return genotypes


__all__ = ["Member", "make_sweep_step", "member_config", "members", "run"]
