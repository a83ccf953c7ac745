"""How LDLVA's training batches reach the train step: `config.data.placement`.

- 'host': TensorFlow threads gather each batch's 1 + K images per row from the decoded table
  and augment them (`streams.train_batches`); the step receives uint8 images.
- 'device': the decoded table lives on the accelerators, one copy per device (a replicated
  global array with 'mesh', a per-device stack with 'pmap'). The host sends only the rows
  (`batches.index_batches`: central and neighbour row indices, labels, VA weights); the step
  gathers the rows and augments them inside the one compiled program
  (`device_augment.augment_batch`), with randomness from (seed, step) as on the host.
- 'auto' (the default): 'device' when the table takes at most `DEVICE_MEMORY_FRACTION` of the
  memory JAX may use on each local device, else 'host'. CPU devices report no memory limit:
  there 'auto' picks 'host' (see `choose_placement`).

The two placements draw different random numbers (TensorFlow's and JAX's generators) from the
same distributions, so a run keeps its placement when resumed for bit-exact continuation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import numpy as np
from absl import logging

from ldl_jax.data import batches, device_augment

# 'auto' keeps the table to this share of a device's memory, the rest for the step itself.
DEVICE_MEMORY_FRACTION = 0.5
# The batch entry holding the device-resident images.
IMAGES = "train_images"


@dataclasses.dataclass(frozen=True)
class Feed:
    """What the train step is compiled with and fed.

    Attributes:
      batches: `batches(start_step)`, the placed global batches from `start_step`, forever.
      input_images: for `steps.make_train_step`: None ('host': the batches carry augmented
        images), or how the step gathers and augments them ('device').
    """

    batches: Callable[[int], Iterator]
    input_images: Callable | None = None


def device_memory_limit() -> int | None:
    """The least memory JAX may use on a local device, or None when a device reports none."""
    limits = [(device.memory_stats() or {}).get("bytes_limit") for device in jax.local_devices()]
    return None if None in limits else min(limits)


def choose_placement(config, image_bytes: int) -> str:
    """'device' or 'host' for `config.data.placement` and a table of `image_bytes`.

    'auto' needs every local device to report its memory limit (accelerators do). CPU devices
    do not, and there 'auto' is 'host': their memory is the host's, which already holds the
    table ('device' adds a copy per device), and the CPU results recorded in the README and
    docs/RESULTS.md, made on the host path, stay reproducible. 'device' is faster on a CPU too
    (docs/BENCHMARKS.md): set it to use it there. All processes must have the same devices,
    so that they agree.

    Raises:
      ValueError: 'device' asked for a table larger than a device's memory.
    """
    placement = config.data.placement
    limit = device_memory_limit()
    if placement == "device" and limit is not None and image_bytes > limit:
        raise ValueError(
            f"config.data.placement='device': the training images take "
            f"{image_bytes / (1 << 30):.1f} GiB, more than the {limit / (1 << 30):.1f} GiB "
            "JAX may use on a device; use 'auto' or 'host'"
        )
    if placement != "auto":
        return placement
    if limit is None:
        return "host"
    return "device" if image_bytes <= DEVICE_MEMORY_FRACTION * limit else "host"


class DeviceImages:
    """Decoded training images placed on every device, and the step's gather + augment of
    their rows.

    Args:
      images: (N, S, S, 3) uint8 (array or memmap), the same on every process.
      parallelism: a `parallel.MeshParallel` or `parallel.PmapParallel`.
      seed, pad_size: the run's seed and the transform's zero padding.
    """

    def __init__(self, images: np.ndarray, parallelism, *, seed: int, pad_size: int):
        self.images = parallelism.place_replicated(images)
        self._place_batch = parallelism.place_batch
        self.seed, self.pad_size = seed, pad_size
        logging.info("Training images on the devices: %.2f GiB each", images.nbytes / (1 << 30))

    def place_batch(self, local_batch: dict[str, np.ndarray]) -> dict:
        """This process's rows of a global batch of indices, placed, plus the images."""
        return {**self._place_batch(local_batch), IMAGES: self.images}

    def input_images(self, step, batch):
        """`steps.make_train_step`'s `input_images`: the batch's augmented uint8 images."""
        return device_augment.augment_batch(
            batch[IMAGES],
            batch["index"],
            batch["neighbor_index"],
            seed=self.seed,
            step=step,
            pad_size=self.pad_size,
        )


def device_feed(config, table, images: np.ndarray, parallelism) -> Feed:
    """Places the decoded training images on every device and feeds their row indices.

    Args:
      config: reads batch_size, seed and pad_size.
      table: the `tables.TrainTable` of the images' rows.
      images: (N, S, S, 3) uint8 (array or memmap), the same on every process.
      parallelism: a `parallel.MeshParallel` or `parallel.PmapParallel`.
    """
    batches.check_images(images, table.num_rows)
    resident = DeviceImages(images, parallelism, seed=config.seed, pad_size=config.pad_size)

    def index_batches(start_step: int) -> Iterator:
        local = batches.index_batches(
            table,
            batch_size=config.batch_size,
            seed=config.seed,
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return batches.prefetch_to_device(local, resident.place_batch)

    return Feed(index_batches, resident.input_images)
