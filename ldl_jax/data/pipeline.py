"""The data of a run behind one entry point: `open_train_data(config)` and `read_eval_sets`.

Everything is validated when opened (the config's values, every CSV, every image file), before
any image is decoded or anything in the workdir is written; `TrainData.decode(workdir)` then
decodes the training images (into a memmap cache in the workdir when they are large) and every
evaluation set. The caller names the rows' format (`ROW_FORMATS`): LDLVA's (`expression`,
`valence`, `arousal`, `knn`) or the VA regressor's (`valence`, `arousal`); the task registry
(`ldl_jax.tasks`) says which its task reads. `TrainData.feed` gives LDLVA's trainer its batches
for `config.data.placement` (`ldl_jax.data.feeds`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from ldl_jax import config_fields, synthetic
from ldl_jax.data import batches, feeds, images, streams, tables


def resolve(path) -> pathlib.Path:
    """An absolute path, with `~` expanded."""
    return pathlib.Path(path).expanduser().absolute()


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """What a task's CSVs hold and how its training rows stream.

    Attributes:
      read_train: (config, csv path, image dir) -> the validated training table.
      read_eval: (config, csv path, image dir) -> a validated evaluation table.
      stream: config -> the `streams` function of its augmented training batches.
      class_weighted: whether `config.class_weights` weighs its loss by class.
    """

    read_train: Callable[[Any, pathlib.Path, pathlib.Path], Any]
    read_eval: Callable[[Any, pathlib.Path, pathlib.Path], Any]
    stream: Callable[[Any], Callable[..., Iterator]]
    class_weighted: bool


def _read_ldlva_train_table(config, csv_path, image_dir) -> tables.TrainTable:
    return tables.read_train_table(
        csv_path,
        image_dir,
        num_classes=config.num_classes,
        num_neighbors=config.num_neighbors,
        va_bandwidth=config.data.va_bandwidth,
    )


def _read_va_table(config, csv_path, image_dir) -> tables.VATable:
    del config  # the VA regressor's columns do not depend on it
    return tables.read_va_table(csv_path, image_dir)


ROW_FORMATS = {
    tables.LDLVA_ROWS: RowFormat(
        read_train=_read_ldlva_train_table,
        read_eval=lambda config, csv_path, image_dir: tables.read_eval_table(
            csv_path, image_dir, num_classes=config.num_classes
        ),
        # The neighbour memory bank needs no neighbour images.
        stream=lambda config: functools.partial(
            streams.train_batches, neighbor_images=not config_fields.uses_memory_bank(config)
        ),
        class_weighted=True,
    ),
    tables.VA_ROWS: RowFormat(
        read_train=_read_va_table,
        read_eval=_read_va_table,
        stream=lambda config: streams.va_train_batches,
        class_weighted=False,
    ),
}


def prepare_synthetic_data(config) -> None:
    """Generates the built-in synthetic data set if `config.data.synthetic` asks for it.

    Process 0 writes it; in a multi-process run the others wait for it at a barrier (every
    process reaches it, whether or not the set existed), so none reads a half-written set.
    """
    spec = config.data.synthetic
    if spec is None:
        return
    data_dir = resolve(spec.dir)
    if jax.process_index() == 0 and not (data_dir / "train.csv").exists():
        logging.info("Generating the synthetic data set in %s", data_dir)
        synthetic.make_synthetic_fer(
            data_dir,
            seed=spec.seed,
            num_train=spec.num_train,
            num_val=spec.num_val,
            num_test=spec.num_test,
            image_size=spec.image_size,
            num_neighbors=spec.num_neighbors,
            class_balance=spec.class_balance,
        )
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("synthetic data set written")


@dataclasses.dataclass
class EvalSet:
    """A validated evaluation set; `images` is filled by `decode`."""

    name: str
    table: tables.EvalTable | tables.VATable
    images: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.table.paths)

    def decode(self, input_size: int) -> EvalSet:
        self.images = images.load_images(self.table.paths, input_size)
        return self

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """This process's slice of every padded, masked global batch, in order (`image`,
        `label` (zeros for a VA set) and `mask`)."""
        labels = getattr(self.table, "labels", None)
        return batches.eval_batches(
            self.images,
            np.zeros(self.num_rows, np.int32) if labels is None else labels,
            batch_size=batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )


def read_eval_sets(config, row_format: str = tables.LDLVA_ROWS) -> dict[str, EvalSet]:
    """`val` and `test` of config.data, then every named set of `config.eval_sets`, validated
    (not decoded), in `ROW_FORMATS[row_format]`."""
    sources = {
        name: (config.data[f"{name}_csv"], config.data.image_dir) for name in ("val", "test")
    }
    for name, source in config.eval_sets.items():
        sources[name] = (source.csv, source.image_dir)
    read_eval = ROW_FORMATS[row_format].read_eval
    return {
        name: EvalSet(name, read_eval(config, resolve(csv_path), resolve(image_dir)))
        for name, (csv_path, image_dir) in sources.items()
        if csv_path
    }


@dataclasses.dataclass
class TrainData:
    """A run's validated training table and evaluation sets.

    Attributes:
      config: the run's config.
      row_format: the rows' `RowFormat`.
      table: the training table (`tables.TrainTable`, or `tables.VATable` for the VA task).
      eval_sets: name -> `EvalSet`.
      images: (N, S, S, 3) uint8 training images, once `decode` ran.
    """

    config: Any
    row_format: RowFormat
    table: tables.TrainTable | tables.VATable
    eval_sets: dict[str, EvalSet]
    images: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def steps_per_epoch(self) -> int:
        return batches.steps_per_epoch(self.num_rows, self.config.batch_size)

    @property
    def num_train_steps(self) -> int:
        """`config.num_train_steps` if positive, else `num_epochs` whole epochs."""
        if self.config.num_train_steps > 0:
            return self.config.num_train_steps
        return self.config.num_epochs * self.steps_per_epoch

    @property
    def class_weights(self) -> np.ndarray | None:
        """(C,) balanced weights of the classification loss if `config.class_weights`."""
        if not (self.row_format.class_weighted and self.config.class_weights):
            return None
        return batches.class_balanced_weights(self.table.labels, self.config.num_classes)

    def decode(self, workdir=None, *, eval_sets: bool = True) -> TrainData:
        """Decodes the training images and (if `eval_sets`) every evaluation set.

        Training images above `config.data.max_in_memory_gb` go to a memmap in
        WORKDIR/cache (reused by a resumed run); without a workdir they stay in memory.
        """
        config = self.config
        cache = None if workdir is None else str(resolve(workdir) / "cache" / "train_images.npy")
        self.images = images.load_images(
            self.table.paths,
            config.input_size,
            cache_path=cache,
            max_in_memory_bytes=int(config.data.max_in_memory_gb * (1 << 30)),
        )
        for eval_set in self.eval_sets.values() if eval_sets else ():
            eval_set.decode(config.input_size)
        return self

    def train_batches(self, start_step: int = 0, place: Callable | None = None) -> Iterator:
        """This process's slice of every augmented global batch from `start_step`, forever.

        With `place` (e.g. `parallelism.place_batch`) the batches are placed on the devices two
        ahead of the step; without, they are numpy arrays on the host.
        """
        host = self.row_format.stream(self.config)(
            self.table,
            self.images,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            pad_size=self.config.pad_size,
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return host if place is None else batches.prefetch_to_device(host, place)

    def feed(self, parallelism) -> feeds.Feed:
        """LDLVA's training feed for `config.data.placement`, once `decode` ran: augmented
        images from the host, or row indices into images placed on the devices now."""
        placement = feeds.choose_placement(self.config, self.images.nbytes)
        logging.info("Training images placed on the %s (config.data.placement)", placement)
        if placement == "device":
            return feeds.device_feed(self.config, self.table, self.images, parallelism)
        return feeds.Feed(
            lambda start_step: self.train_batches(start_step, parallelism.place_batch)
        )


def open_train_data(config, row_format: str = tables.LDLVA_ROWS) -> TrainData:
    """Generates the synthetic set if asked, reads and validates the training table and every
    evaluation set in `ROW_FORMATS[row_format]`; nothing is decoded yet. The config's own
    values are checked before, by the trainer (`config_checks.validate_config`).

    Raises:
      ValueError: a config value (naming the field), or a batch larger than the training set.
      DataError: a CSV or image problem, naming the file, the row and the column.
    """
    prepare_synthetic_data(config)
    rows = ROW_FORMATS[row_format]
    table = rows.read_train(config, resolve(config.data.train_csv), resolve(config.data.image_dir))
    data = TrainData(config, rows, table, read_eval_sets(config, row_format))
    if data.steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {data.num_rows} rows of "
            f"{config.data.train_csv}"
        )
    return data
