"""Model statistics (parameters, multiply-adds) and accuracy, of a batch or of a whole split.

Counting traces the model with `jax.eval_shape`, so no weights are materialised: a 4.7M-parameter
ImageNet network is counted in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dnas import data, ops, parallel
from dnas.types import Array, Batch, Params


def count_params(params: Params, exclude: tuple[str, ...] = ()) -> int:
    """Number of scalars in a parameter tree, leaving out subtrees whose key is in `exclude`."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = {getattr(p, "key", None) for p in path}
        if keys.isdisjoint(exclude):
            total += int(np.prod(leaf.shape))
    return total


def model_stats(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *args: Any,
    exclude: tuple[str, ...] = ("auxiliary_head",),
    **kwargs: Any,
) -> dict[str, int]:
    """`params` (without the `exclude` subtrees: the auxiliary head, the papers' convention),
    `params_total`, and `macs`: multiply-adds per image of the convolutions and dense layers in
    inference, what NAS papers call "FLOPs" or "mult-adds" (separable convolutions counted as
    depthwise + pointwise). `flops` is the same number under its old name (an alias kept for
    scripts that read it).

    `args` and `kwargs` follow the input in `model.apply` (e.g. the supernet's mixing weights).
    """
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(
        lambda k, x, args: model.init({"params": k, "dropout": k}, x, *args, **kwargs),
        jax.random.key(0),
        x,
        args,
    )
    with ops.count_macs() as macs:
        jax.eval_shape(lambda v, x, args: model.apply(v, x, *args, **kwargs), variables, x, args)
    params = variables.get("params", {})
    return {
        "params": count_params(params, exclude),
        "params_total": count_params(params),
        "macs": macs[0],
        "flops": macs[0],
    }


def accuracy(logits: Array, labels: Array) -> Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def over_source(
    eval_step: Callable[[Any, Batch], dict[str, Array]],
    state: Any,
    source: data.Source,
    batch_size: int,
    mesh: Mesh | None = None,
    *,
    fill: str = "zeros",
) -> dict[str, float]:
    """Mean loss and accuracy over every example of `source` (`data.eval_batches`, `fill` as
    there). `eval_step(state, batch)` returns sums over the batch's counted examples, `{"loss",
    "correct", "n"}`, so batches add up; with `mesh`, batches are split over its devices."""
    totals = None
    for batch in data.eval_batches(source, batch_size, fill=fill):
        if mesh is not None:
            batch = parallel.shard_batch(batch, mesh)
        out = eval_step(state, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    n = float(totals["n"])
    return {"loss": float(totals["loss"]) / n, "accuracy": float(totals["correct"]) / n}
