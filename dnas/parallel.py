"""Data parallelism with `jax.sharding`: one mesh axis, batches split along it, state replicated.

The search and the retraining steps are written for one device; `compile_step` jits them with the
batch sharded over a one-axis `Mesh` ("data") and the state (weights, alphas, optimiser states,
step, key) and the metrics replicated. XLA's SPMD partitioner inserts the collectives: the
gradient of a mean over the global batch is all-reduced, and the BatchNorm statistics of the
supernet are means over the global batch too (synchronised BatchNorm). So an N-device step
computes the same function as a one-device step of the same global batch (up to float summation
order), and the alphas are one replicated array: every device holds the same architecture by
construction, there is nothing to drift or to average.

In-jit augmentation draws its random numbers with the partitionable threefry PRNG (JAX's default
since 0.5), whose values do not depend on the sharding.

Multi-host (`jax.distributed.initialize()` first, see README): every process runs the same
program; each feeds the rows of the global batch that belong to its devices
(`process_rows`), assembled with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
    """A one-axis mesh over the first `num_devices` devices (0: all of them, on all hosts)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n < 1 or n > len(devices):
        raise ValueError(
            f"num_devices={num_devices} but {len(devices)} {devices[0].platform} device(s) are "
            "visible; set --config.num_devices between 1 and that (0 uses all)"
        )
    return Mesh(np.asarray(devices[:n]), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh; the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise ValueError(
            f"{what}={batch_size} does not split over {mesh.size} devices; use a multiple of "
            f"{mesh.size} or set --config.num_devices"
        )


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every leaf of `tree` (host or device arrays) on all devices of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


def process_rows(batch_size: int) -> slice:
    """The rows of a global batch that this process feeds (all of them on one host)."""
    per_process = batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A host batch (the global batch, identical on every process) as arrays split over `mesh`."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    out = {}
    for k, v in batch.items():
        local = v[process_rows(v.shape[0])]
        out[k] = jax.make_array_from_process_local_data(sharding, local, v.shape)
    return out


def shard_batches(batches: Iterable[tuple], mesh: Mesh) -> Iterator[tuple]:
    """Shards each batch of each tuple; the transfer of batch t + 1 overlaps step t."""
    for group in batches:
        yield tuple(shard_batch(b, mesh) for b in group)


__all__ = [
    "DATA",
    "batch_sharded",
    "check_batch_size",
    "make_mesh",
    "process_rows",
    "replicate",
    "replicated",
    "shard_batch",
    "shard_batches",
]
