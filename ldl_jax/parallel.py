"""Data parallelism over all devices of all processes: `config.parallel` = 'mesh' or 'pmap'.

- 'mesh': the train step is one global program, jitted over a 1-D `Mesh` with the batch
  sharded along it and the state replicated (`NamedSharding`). XLA inserts the collectives;
  everything, BatchNorm statistics included, is computed over the global batch, exactly as on
  one device.
- 'pmap': the step runs per device under `jax.pmap` with explicit collectives (see
  `steps.make_train_step(axis_name=...)`); BatchNorm is per device (each device normalises its
  own B / devices rows, as the reference's single GPU did with its 32) unless
  `config.sync_batch_norm`, and the per-device statistics are averaged before evaluation and
  saving.

Checkpoints and evaluation see one host-level copy of the state (`host_state`, after
`sync_batch_stats`), so they do not depend on the number of devices. `place_replicated` puts
one copy of a host array on every device (the device-resident training images of
`ldl_jax.data.feeds`), in the form each mode's step reads it from the batch.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ldl_jax import steps

DATA_AXIS = "data"


class MeshParallel:
    """jit over a Mesh of all devices; BatchNorm is always synchronised."""

    bn_axis_name = None

    def __init__(self):
        self.mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(DATA_AXIS))

    def place_state(self, state):
        return jax.device_put(state, self.replicated)

    def sync_batch_stats(self, state):
        return state

    def checkpoint_target(self, state):
        """Where a restored state goes: replicated over the mesh (on every process)."""
        return self.place_state(state)

    def host_state(self, state):
        return state

    def place_batch(self, local_batch: dict[str, np.ndarray]):
        """A global array from each process's local rows."""
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.sharded, x), local_batch
        )

    def place_replicated(self, array: np.ndarray):
        """A global array replicated on every device; each process passes the same array."""
        return jax.make_array_from_callback(
            array.shape, self.replicated, lambda index: array[index]
        )

    def compile_train_step(
        self,
        model,
        tx,
        config,
        class_weights=None,
        train_labels=None,
        train_neighbors=None,
        input_images=None,
    ):
        # With `input_images` the batch also holds the replicated device-resident images: each
        # of its arrays is then taken with the sharding it was placed with (None).
        batch_sharding = self.sharded if input_images is None else None
        return jax.jit(
            steps.make_train_step(
                model,
                tx,
                config,
                class_weights,
                train_labels=train_labels,
                train_neighbors=train_neighbors,
                input_images=input_images,
            ),
            in_shardings=(self.replicated, batch_sharding),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=0,
        )

    def compile_eval_step(self, model, num_classes: int) -> Callable:
        return jax.jit(
            steps.make_eval_step(model, num_classes),
            in_shardings=(self.replicated, self.replicated, self.sharded),
            out_shardings=self.replicated,
        )


class PmapParallel:
    """pmap over the local devices, collectives across all processes' devices."""

    def __init__(self, sync_batch_norm: bool):
        self.bn_axis_name = DATA_AXIS if sync_batch_norm else None
        self.num_local_devices = jax.local_device_count()
        self._average_batch_stats = jax.pmap(
            lambda stats: jax.lax.pmean(stats, DATA_AXIS), axis_name=DATA_AXIS
        )

    def place_state(self, state):
        """One copy of the host-level state per local device."""
        stacked = jax.tree.map(
            lambda x: np.broadcast_to(np.asarray(x), (self.num_local_devices,) + np.shape(x)),
            state,
        )
        return jax.pmap(lambda x: x)(stacked)

    def checkpoint_target(self, state):
        """Where a restored state goes: one host-level copy, replicated afterwards."""
        return state

    def sync_batch_stats(self, state):
        """Replaces every device's BatchNorm statistics by their mean over the devices."""
        return state.replace(batch_stats=self._average_batch_stats(state.batch_stats))

    def host_state(self, state):
        """One copy of a state whose statistics were synchronised.

        With several processes the copy is a global array replicated over every process's
        devices, as orbax's collective save and the mesh mode expect.
        """
        local_copy = jax.tree.map(lambda x: x[0], state)
        if jax.process_count() == 1:
            return local_copy
        replicated = NamedSharding(Mesh(np.asarray(jax.devices()), (DATA_AXIS,)), P())
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(replicated, np.asarray(x)),
            local_copy,
        )

    def place_batch(self, local_batch: dict[str, np.ndarray]):
        """Splits the local rows over the local devices: (devices, rows / devices, ...)."""
        return jax.tree.map(
            lambda x: np.reshape(x, (self.num_local_devices, -1) + x.shape[1:]), local_batch
        )

    def place_replicated(self, array: np.ndarray):
        """One copy of a host array per local device, stacked along the mapped axis, placed once
        so that passing it to the step every call copies nothing."""
        local = NamedSharding(Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,)), P(DATA_AXIS))
        shape = (self.num_local_devices, *array.shape)
        return jax.make_array_from_callback(shape, local, lambda index: array[None])

    def compile_train_step(
        self,
        model,
        tx,
        config,
        class_weights=None,
        train_labels=None,
        train_neighbors=None,
        input_images=None,
    ):
        return jax.pmap(
            steps.make_train_step(
                model,
                tx,
                config,
                class_weights,
                axis_name=DATA_AXIS,
                train_labels=train_labels,
                train_neighbors=train_neighbors,
                input_images=input_images,
            ),
            axis_name=DATA_AXIS,
            donate_argnums=0,
        )

    def compile_eval_step(self, model, num_classes: int) -> Callable:
        per_device = jax.pmap(
            steps.make_eval_step(model, num_classes), axis_name=DATA_AXIS, in_axes=(None, None, 0)
        )

        def eval_step(params, batch_stats, batch):
            counts = per_device(params, batch_stats, batch)
            return jax.tree.map(lambda x: jnp.sum(x, axis=0), counts)

        return eval_step


def create(config):
    """The parallelism of `config.parallel` (its values are checked by
    `ldl_jax.config_checks.validate_config`: the mode, batches that divide over the devices)."""
    if config.parallel == "mesh":
        return MeshParallel()
    return PmapParallel(config.sync_batch_norm)
