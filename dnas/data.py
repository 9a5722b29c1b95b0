"""Datasets: the embedded default (scikit-learn's 8x8 digits) and tensorflow-datasets pipelines.

Three layers, each usable alone:

* **Sources** (`load`): random-access objects (`len(src)`, `src[i]` -> one example dict) for the
  `train`, `val` and `test` splits. Datasets that fit in memory are read once into one numpy array
  (`ArraySource`), so a batch is one fancy-indexing copy rather than a Python loop over examples;
  full-size ImageNet is decoded lazily per example (`TfdsImageSource`). `search_split` halves a
  training source the way DARTS does.
* **Batches** (`batches`, `batch_at`, `eval_batches`): batch `i` is a pure function of
  `(seed, i)`, so a run resumed at step `k` sees exactly the batches an uninterrupted run would
  have; nothing about the data pipeline needs checkpointing.
* **Augmentation** (`preprocess`, `augment`, `normalize`): pure JAX functions with static shapes,
  meant to run inside the jitted train step with `jax.random.fold_in(key, step)`, in the order of
  quark0/darts `utils._data_transforms_cifar10`.

tensorflow-datasets is imported only when a tfds dataset is asked for: the default dataset needs
neither it nor a download.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from dnas.types import Array, Batch, PRNGKey

_log = logging.getLogger(__name__)

Example = dict[str, np.ndarray]  # {'image': (H, W, C) float32 in [0, 1], 'label': () int32}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of dnas needs to know about a dataset, without reading it.

    `mean`/`std` are per-channel statistics of images scaled to [0, 1]; `crop_padding`, `flip` and
    `cutout_length` are the default training augmentation (`preprocess`), overridable per call.
    """

    name: str
    tfds_name: str | None  # None: shipped inside an installed package, no download
    image_size: int
    channels: int
    num_classes: int
    _: dataclasses.KW_ONLY
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    cutout_length: int = 0
    # tfds split names: ImageNet's labelled held-out split, `validation`, serves as the test set.
    train_split: str = "train"
    test_split: str = "test"
    # Keep only labels below `num_classes` (NAS-Bench-201's ImageNet16-120 subset).
    filter_labels: bool = False
    # False: decode per example on demand instead of reading the split into memory once.
    in_memory: bool = True
    # Files tfds's download manager takes from `<data_dir>/downloads/manual/` instead of the web.
    manual_files: tuple[str, ...] = ()
    # Examples in the training split, known without reading it (config validation: a batch no
    # larger than the split it draws from); None: not known.
    train_examples: int | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean and std need one value per channel")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


# Computed once by `digits_statistics()` over the training split (tests/test_data.py checks them).
_DIGITS_MEAN, _DIGITS_STD = (0.30539,), (0.37608,)

# One entry a few lines: a table to read across.
# fmt: off
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        # Flipping a digit changes its meaning, and at 8x8 a 4-pixel shift would crop half of it.
        DatasetInfo("digits", None, 8, 1, 10, mean=_DIGITS_MEAN, std=_DIGITS_STD, crop_padding=1,
                    train_examples=1258),
        # quark0/darts utils.py: CIFAR_MEAN, CIFAR_STD and RandomCrop(32, padding=4) + flip.
        DatasetInfo("cifar10", "cifar10", 32, 3, 10, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616), crop_padding=4, flip=True,
                    manual_files=("cifar-10-binary.tar.gz",), train_examples=50_000),
        DatasetInfo("cifar100", "cifar100", 32, 3, 100, mean=(0.5071, 0.4865, 0.4409),
                    std=(0.2673, 0.2564, 0.2762), crop_padding=4, flip=True,
                    manual_files=("cifar-100-binary.tar.gz",), train_examples=50_000),
        # Statistics of the SVHN training split as commonly quoted (not re-measured here);
        # house numbers are not mirror-symmetric, so no flip.
        DatasetInfo("svhn", "svhn_cropped", 32, 3, 10, mean=(0.4377, 0.4438, 0.4728),
                    std=(0.1980, 0.2010, 0.1970), crop_padding=4,
                    manual_files=("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"),
                    train_examples=73_257),
        # NAS-Bench-201's ImageNet16-120: 16x16 ImageNet, the first 120 classes. Statistics and
        # RandomCrop(16, padding=2) + flip from D-X-Y/AutoDL-Projects get_dataset_with_transform.py.
        # Its size depends on which classes tfds numbers below 120: train_examples not known.
        DatasetInfo("imagenet16-120", "imagenet_resized/16x16", 16, 3, 120,
                    mean=(122.68 / 255, 116.66 / 255, 104.01 / 255),
                    std=(63.22 / 255, 61.26 / 255, 65.09 / 255), crop_padding=2, flip=True,
                    test_split="validation", filter_labels=True,
                    manual_files=("Imagenet16_train_npz.zip", "Imagenet16_val_npz.zip")),
        DatasetInfo("imagenet", "imagenet2012", 224, 3, 1000, mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), flip=True, test_split="validation",
                    in_memory=False, train_examples=1_281_167,
                    manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")),
    )
}
# fmt: on


def get_info(name: str) -> DatasetInfo:
    """The registered `DatasetInfo` for `name`; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None


# --------------------------------------------------------------------------------------- sources


class Source(Protocol):
    """A random-access dataset split: `len(src)` examples, `src[i]` -> `Example`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Example: ...


def _to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; float images are assumed to be in [0, 1] already."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """A split held in memory as one array, so gathering a batch is one vectorised copy.

    `images` is (N, H, W, C), either uint8 in [0, 255] (4x smaller; CIFAR-sized datasets) or
    float32 in [0, 1]; examples and batches come out as float32 in [0, 1] either way.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"need images (N, H, W, C) and labels (N,), got {self.images.shape} and "
                f"{self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Example:
        return {
            "image": _to_unit_float(self.images[index]),
            "label": np.int32(self.labels[index]),
        }

    def gather(self, indices: np.ndarray) -> Batch:
        return {
            "image": _to_unit_float(self.images[indices]),
            "label": self.labels[indices].astype(np.int32, copy=False),
        }

    def subset(self, start: int, stop: int) -> ArraySource:
        # Views, not copies: the DARTS halves of CIFAR cost no memory.
        return ArraySource(self.images[start:stop], self.labels[start:stop])


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsImageSource:
    """Full-size ImageNet, decoded per example: resize the shorter side, then centre-crop.

    This is the DARTS ImageNet evaluation transform (Resize(256), CenterCrop(224)) applied to every
    split, so batches have static shapes; random crops and flips are then done on device.
    """

    source: Any  # a tfds data source: random access to decoded example dicts
    indices: np.ndarray  # which of its examples this view covers, in order
    image_size: int

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Example:
        example = self.source[int(self.indices[index])]
        image = _resize_centre_crop(example["image"], self.image_size)
        return {"image": _to_unit_float(image), "label": np.int32(example["label"])}

    def gather(self, indices: np.ndarray) -> Batch:
        return _stack([self[int(i)] for i in indices])

    def subset(self, start: int, stop: int) -> TfdsImageSource:
        return dataclasses.replace(self, indices=self.indices[start:stop])


def _resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image  # tfds decodes images with pillow already

    height, width = image.shape[:2]
    short = round(size * 256 / 224)  # 256 for 224, as in DARTS train_imagenet.py
    scale = short / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]


@dataclasses.dataclass(frozen=True, eq=False)
class _Subset:
    """A contiguous view of any source that has no `subset` of its own."""

    source: Source
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.source[self.start + index]

    def gather(self, indices: np.ndarray) -> Batch:
        return gather(self.source, np.asarray(indices) + self.start)


def _stack(examples: Sequence[Example]) -> Batch:
    return {
        "image": np.stack([e["image"] for e in examples]).astype(np.float32, copy=False),
        "label": np.asarray([e["label"] for e in examples], dtype=np.int32),
    }


def gather(source: Source, indices: np.ndarray) -> Batch:
    """The batch of `source`'s examples at `indices` (its own `gather` where it has one)."""
    gather = getattr(source, "gather", None)
    if gather is not None:
        return gather(indices)
    return _stack([source[int(i)] for i in indices])


class Splits(NamedTuple):
    """The sources of one dataset, as returned by `load`."""

    train: Source
    val: Source | None  # tfds datasets: None (carve one from `train` with `search_split`)
    test: Source


def load(name: str, *, data_dir: str | os.PathLike | None = None) -> Splits:
    """The train/val/test sources of a registered dataset.

    `digits` is built in (see `digits_splits`). tfds datasets have no separate validation split
    here (`val=None`): DARTS searches on two halves of the training set (`search_split`) and
    reports on the test set; ImageNet's labelled `validation` split serves as `test`.

    Args:
      name: a key of `DATASETS`.
      data_dir: the tfds data directory; default `$TFDS_DATA_DIR` (read now, not at import) or
        `~/tensorflow_datasets`. Ignored for `digits`.

    Raises:
      DatasetNotPreparedError: the tfds dataset is not prepared in `data_dir` (checked before tfds
        could try to download it).
    """
    info = get_info(name)
    if info.tfds_name is None:
        return digits_splits()
    return Splits(
        train=_tfds_split(info, info.train_split, data_dir),
        val=None,
        test=_tfds_split(info, info.test_split, data_dir),
    )


def search_split_size(n: int, train_portion: float = 0.5) -> int:
    """How many of `n` training examples train the weights in the DARTS search split (the rest
    train the alphas); config validation checks batch sizes with it before any data is read."""
    if not 0 < train_portion < 1:
        raise ValueError(f"train_portion must be in (0, 1), got {train_portion}")
    return math.floor(train_portion * n)


def search_split(train: Source, train_portion: float = 0.5) -> tuple[Source, Source]:
    """The DARTS search split: (first `train_portion` for weights, the rest for alphas).

    quark0/darts train_search.py: `split = int(np.floor(args.train_portion * num_train))`, weights
    on `indices[:split]`, architecture on `indices[split:num_train]`.
    """
    n = len(train)
    split = search_split_size(n, train_portion)
    subset = getattr(train, "subset", None)
    if subset is not None:
        return subset(0, split), subset(split, n)
    return _Subset(train, 0, split), _Subset(train, split, n)


# -------------------------------------------------------------------------------- digits (built in)

# The digits split: stratified per class, 70% train / 10% val / 20% test (rounded per class). Drawn
# from numpy's legacy RandomState, whose stream NumPy guarantees never to change (NEP 19), with a
# fixed seed independent of any run seed, so every run and every machine sees the same split.
_DIGITS_FRACTIONS = (0.7, 0.1)  # train, val; test is the rest
_DIGITS_SPLIT_SEED = 0


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (1797, 8, 8) float64 0..16, labels (1797,) int), what
    `sklearn.datasets.load_digits()` returns, read from the CSV scikit-learn ships
    (`sklearn/datasets/data/digits.csv.gz`, found without importing scikit-learn, whose
    `sklearn.datasets` import takes ~1 s of every `dnas` process); `load_digits()` itself if
    that file is not where it has been since scikit-learn 0.x."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [os.path.join(r, "datasets", "data", "digits.csv.gz") for r in roots]
    found = [path for path in found if os.path.isfile(path)]
    if found:
        table = np.loadtxt(found[0], delimiter=",")
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels = digits.images, digits.target
    images.flags.writeable = False  # cached: shared by every caller
    labels.flags.writeable = False
    return images, labels


@functools.cache
def _digits_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = _digits_arrays()[1]
    rng = np.random.RandomState(_DIGITS_SPLIT_SEED)
    train, val, test = [], [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(_DIGITS_FRACTIONS[0] * len(members))
        n_val = round(_DIGITS_FRACTIONS[1] * len(members))
        train.append(members[:n_train])
        val.append(members[n_train : n_train + n_val])
        test.append(members[n_train + n_val :])
    # Training examples in random order (not grouped by class), so that the contiguous DARTS
    # halves of `search_split` are both class-balanced; held-out splits in dataset order.
    out = rng.permutation(np.concatenate(train)), np.sort(np.concatenate(val))
    out += (np.sort(np.concatenate(test)),)
    for a in out:
        a.flags.writeable = False
    return out


@functools.cache
def digits_splits() -> Splits:
    """scikit-learn's 1,797 8x8 handwritten digits as (1,258 train, 179 val, 360 test) sources.

    Images are float32 in [0, 1] (the raw 0..16 intensities divided by 16), shaped (N, 8, 8, 1).
    The data ships inside scikit-learn: nothing is downloaded. Arrays are read-only and shared
    between calls.
    """
    raw_images, raw_labels = _digits_arrays()
    images = (raw_images / 16.0).astype(np.float32)[..., None]
    labels = raw_labels.astype(np.int32)
    sources = []
    for idx in _digits_indices():
        split_images, split_labels = images[idx], labels[idx]
        split_images.flags.writeable = False
        split_labels.flags.writeable = False
        sources.append(ArraySource(split_images, split_labels))
    return Splits(*sources)


def digits_statistics() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) over the digits training split, the source of `_DIGITS_MEAN/STD`."""
    images = digits_splits().train.images
    mean = images.mean(axis=(0, 1, 2), dtype=np.float64)
    std = images.std(axis=(0, 1, 2), dtype=np.float64)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ------------------------------------------------------------------------------------------ tfds


class DatasetNotPreparedError(FileNotFoundError):
    """A tensorflow-datasets dataset has not been downloaded and prepared in the data directory."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """`data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tfds's own default).

    Resolved at call time: tfds reads `TFDS_DATA_DIR` once at import, which surprises anyone who
    sets it later in the same process.
    """
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


def prepare_instructions(info: DatasetInfo, data_dir: str) -> str:
    """How to prepare `info`'s tfds dataset in `data_dir` (preparing needs TensorFlow)."""
    manual = os.path.join(data_dir, "downloads", "manual")
    files = ", ".join(info.manual_files) or "the dataset's source files"
    return (
        f"dataset {info.name!r} (tfds {info.tfds_name!r}) is not prepared in {data_dir}.\n"
        "Reading a prepared dataset needs no TensorFlow; preparing it does:\n"
        "  pip install 'dnas[prepare]'\n"
        f"  tfds build {info.tfds_name} --data_dir {data_dir} --file_format=array_record\n"
        "  (dnas reads array_record, which tfds.data_source needs; tfds build writes tfrecord "
        "unless told)\n"
        f"Offline: put {files} in {manual}/ first; tfds then uses them instead of downloading.\n"
        "The built-in dataset needs none of this: --config.dataset=digits"
    )


def _is_prepared(tfds_name: str, data_dir: str) -> bool:
    import tensorflow_datasets as tfds

    return tfds.builder(tfds_name, data_dir=data_dir).is_prepared()


def _open_tfds(info: DatasetInfo, split: str, data_dir: str | os.PathLike | None) -> Any:
    """tfds's array_record data source for one split, after checking it exists locally.

    Offline, an unprepared tfds dataset retries its download for minutes before failing; checking
    `is_prepared()` first (a few file lookups) fails in well under a second instead.
    """
    assert info.tfds_name is not None
    root = resolve_data_dir(data_dir)
    if not _is_prepared(info.tfds_name, root):
        raise DatasetNotPreparedError(prepare_instructions(info, root))
    import tensorflow_datasets as tfds

    return tfds.data_source(info.tfds_name, split=split, data_dir=root, download=False)


def _tfds_split(info: DatasetInfo, split: str, data_dir: str | os.PathLike | None) -> Source:
    source = _open_tfds(info, split, data_dir)
    if not info.in_memory:
        return TfdsImageSource(source, np.arange(len(source)), info.image_size)
    return _read_into_memory(source, info, split)


def _read_into_memory(source: Any, info: DatasetInfo, split: str) -> ArraySource:
    """Reads every example once into one uint8 array (CIFAR-10 train: 150 MB, a few seconds)."""
    start = time.perf_counter()
    n = len(source)
    images = np.empty((n, *info.input_shape), np.uint8)
    labels = np.empty((n,), np.int32)
    kept = 0
    # One example at a time: tfds's batched `__getitems__` is broken under `tfds.testing.mock_data`
    # and decoding, not reading, dominates anyway.
    for i in range(n):
        example = source[i]
        label = int(example["label"])
        if info.filter_labels and label >= info.num_classes:
            continue
        images[kept], labels[kept] = example["image"], label
        kept += 1
    if kept < n:  # copies, so the unused tail of the buffer is freed
        images, labels = images[:kept].copy(), labels[:kept].copy()
    _log.info(
        "read %s/%s: %d examples in %.1f s", info.name, split, kept, time.perf_counter() - start
    )
    return ArraySource(images, labels)


# --------------------------------------------------------------------------------------- batches


def steps_per_epoch(source: Source, batch_size: int) -> int:
    """Full batches per epoch: the last partial batch is dropped (drop_last, as in DARTS)."""
    steps = len(source) // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {len(source)} examples")
    return steps


@functools.lru_cache(maxsize=8)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of `epoch`: a pure function of (n, seed, epoch), read-only.

    Legacy RandomState, because NumPy guarantees its stream never changes (NEP 19): a run resumed
    after a NumPy upgrade still sees the same batches. Cached because every step of an epoch
    needs the same permutation.
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed} and {epoch}")
    words = [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch & 0xFFFFFFFF, epoch >> 32]
    perm = np.random.RandomState(np.asarray(words, np.uint32)).permutation(n)
    perm.flags.writeable = False
    return perm


def batch_indices(n: int, batch_size: int, step: int, *, seed: int) -> np.ndarray:
    """Example indices of training batch `step`: epoch `step // steps`, slot `step % steps`."""
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {n} examples")
    epoch, slot = divmod(step, steps)
    return epoch_permutation(n, seed, epoch)[slot * batch_size : (slot + 1) * batch_size]


def batch_at(source: Source, batch_size: int, step: int, *, seed: int) -> Batch:
    """Training batch `step`, a pure function of (source, batch_size, seed, step).

    Each epoch visits every example once in a fresh order (`epoch_permutation`); the
    `len(source) % batch_size` examples left over at the end of an epoch are skipped that epoch.
    """
    return gather(source, batch_indices(len(source), batch_size, step, seed=seed))


def batches(
    source: Source,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    num_threads: int = 1,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Endless training batches from `start_step` on: `batch_at(..., step)` for each step.

    Resuming is exact by construction: the iterator started at `k` yields what one started at 0
    yields from its `k`-th batch on, so the data pipeline needs no checkpoint (only the step).

    Args:
      source: a random-access source (`load`, `search_split`).
      batch_size: examples per batch.
      seed: the data-order seed (one stream of the run's root seed).
      start_step: the first step to yield, e.g. the restored `state.step`.
      num_threads: worker threads assembling batches ahead of the consumer (grain); 0 assembles
        them in the caller's thread. Order does not depend on it.
      prefetch: how many batches the workers may hold ready.

    Yields:
      `{'image': float32 (B, H, W, C) in [0, 1], 'label': int32 (B,)}`.
    """
    steps_per_epoch(source, batch_size)  # fail early on a batch larger than the data
    make = functools.partial(batch_at, source, batch_size, seed=seed)
    if num_threads == 0:
        step = start_step
        while True:
            yield make(step)
            step += 1
    import grain

    # Grain maps step -> batch in worker threads and hands batches back in step order.
    steps = grain.MapDataset.range(start_step, sys.maxsize).map(make)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(prefetch, 1))
    yield from steps.to_iter_dataset(options)


def eval_batches(source: Source, batch_size: int, *, fill: str = "zeros") -> Iterator[Batch]:
    """Every example once, in order, in equal-shape batches (one compiled eval step).

    `mask` (bool (B,)) marks the examples counted, so metrics must be weighted by it. The last
    batch is completed with zero images (`fill="zeros"`), or (`fill="overlap"`) with the examples
    just before it, already counted: every batch then holds real images only, as a model whose
    evaluation uses the batch's statistics needs (the supernet's BatchNorm); it needs at least
    `batch_size` examples.
    """
    if fill not in ("zeros", "overlap"):
        raise ValueError(f"fill must be 'zeros' or 'overlap', got {fill!r}")
    n = len(source)
    if fill == "overlap" and n < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {n} examples")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if fill == "overlap" and stop - start < batch_size:
            batch = gather(source, np.arange(stop - batch_size, stop))
            batch["mask"] = np.arange(batch_size) >= batch_size - (stop - start)
            yield batch
            continue
        batch = gather(source, np.arange(start, stop))
        pad = batch_size - (stop - start)
        if pad:
            batch = {
                k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
        batch["mask"] = np.arange(batch_size) < stop - start
        yield batch


# ---------------------------------------------------------------------------------- augmentation


def random_crop(key: PRNGKey, images: Array, padding: int) -> Array:
    """torchvision RandomCrop(size, padding=p) per image: zero-pad by p, crop at a random offset.

    Offsets are uniform in [0, 2p] on each axis, as in torchvision. One dynamic slice per image
    (vmapped): XLA emits a single small gather.
    """
    if padding == 0:
        return images
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(image: Array, offset: Array) -> Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: PRNGKey, images: Array) -> Array:
    """RandomHorizontalFlip: mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def cutout(key: PRNGKey, images: Array, length: int) -> Array:
    """Cutout (DeVries & Taylor 2017) as in quark0/darts utils.Cutout: zero one square per image.

    The centre is uniform over all pixels; the square spans [centre - length//2, centre +
    length//2) clipped to the image, in every channel (so an odd `length` cuts `length - 1`, as
    the reference does).
    """
    if length == 0:
        return images
    n, h, w, _ = images.shape
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (n, 1, 1), 0, h)
    cx = jax.random.randint(key_x, (n, 1, 1), 0, w)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    half = length // 2
    # No explicit clipping: comparing against the unclipped bounds selects the same pixels.
    inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def normalize(images: Array, mean: Sequence[float], std: Sequence[float]) -> Array:
    """(images - mean) / std per channel (torchvision Normalize)."""
    mean_c = jnp.asarray(mean, images.dtype)
    std_c = jnp.asarray(std, images.dtype)
    return (images - mean_c) / std_c


def augment(
    key: PRNGKey,
    images: Array,
    *,
    crop_padding: int = 0,
    flip: bool = False,
    cutout_length: int = 0,
) -> Array:
    """Random crop, then horizontal flip, then cutout, on images as given.

    Padding fills with 0 and cutout writes 0 in whatever space `images` are in; for the DARTS
    order (crop and flip on pixels, cutout after normalisation) use `preprocess`. With the same
    key, the two draw identical crops, flips and squares.
    """
    key_crop, key_flip, key_cut = jax.random.split(key, 3)
    images = random_crop(key_crop, images, crop_padding)
    if flip:
        images = random_flip(key_flip, images)
    return cutout(key_cut, images, cutout_length)


def preprocess(
    key: PRNGKey | None,
    images: Array,
    info: DatasetInfo,
    *,
    train: bool,
    crop_padding: int | None = None,
    flip: bool | None = None,
    cutout_length: int | None = None,
    dtype: Any = jnp.float32,
) -> Array:
    """A batch of [0, 1] images -> network input in `dtype` (the compute dtype: bfloat16 under
    `precision=bfloat16`; the augmentation itself runs in float32), in quark0/darts
    `_data_transforms_cifar10` order.

    Training: RandomCrop(padding) with zero fill, RandomHorizontalFlip, Normalize, then Cutout,
    which therefore zeroes a square in normalised space (the reference appends Cutout after
    Normalize). Evaluation (`train=False`): Normalize only, and `key` may be None.

    Call it inside the jitted step with `jax.random.fold_in(key, step)`; the augmentation
    arguments (default: `info`'s) and `train` must be static.
    """
    images = jnp.asarray(images, jnp.float32)
    if not train:
        return normalize(images, info.mean, info.std).astype(dtype)
    if key is None:
        raise ValueError("train=True needs a PRNG key")
    crop_padding = info.crop_padding if crop_padding is None else crop_padding
    flip = info.flip if flip is None else flip
    cutout_length = info.cutout_length if cutout_length is None else cutout_length
    # The same key split as `augment`, so both draw the same crops, flips and squares.
    key_crop, key_flip, key_cut = jax.random.split(key, 3)
    images = random_crop(key_crop, images, crop_padding)
    if flip:
        images = random_flip(key_flip, images)
    images = normalize(images, info.mean, info.std)
    return cutout(key_cut, images, cutout_length).astype(dtype)
