"""Tests for dnas.data: the digits split, the DARTS search split, resumable batches, augmentation
and the tfds path (offline: unprepared datasets fail fast, prepared ones are mocked).

Augmentation is checked against independent numpy computations (every candidate shift of a
crop, the mirror of a flip, the rectangle of a cutout), not against the keys the code draws.
"""

import dataclasses
import functools
import sys
import time

import jax
import numpy as np
import pytest

from dnas import data

TFDS_NAMES = [name for name, info in data.DATASETS.items() if info.tfds_name is not None]


@pytest.fixture(scope="module")
def digits() -> data.Splits:
    return data.digits_splits()


@pytest.fixture
def numbered() -> data.ArraySource:
    """103 examples whose label is their index, so a batch says which examples it holds."""
    n = 103
    images = np.arange(n * 2 * 2, dtype=np.float32).reshape(n, 2, 2, 1) / (n * 4)
    return data.ArraySource(images, np.arange(n, dtype=np.int32))


class ListSource:
    """A bare random-access source (no `gather`/`subset`), as a user might pass one."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> data.Example:
        return {"image": np.full((2, 2, 1), index / self.n, np.float32), "label": np.int32(index)}


# ----------------------------------------------------------------------------------- registry


def test_registry_unknown_name_lists_valid_ones():
    with pytest.raises(KeyError, match="digits"):
        data.get_info("mnist")


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_registry_statistics_per_channel(name):
    info = data.get_info(name)
    assert len(info.mean) == len(info.std) == info.channels
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)


# ------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges(digits):
    for split in digits:
        assert split.images.dtype == np.float32 and split.images.shape[1:] == (8, 8, 1)
        assert split.images.min() >= 0 and split.images.max() <= 1
        assert split.labels.dtype == np.int32
        assert set(np.unique(split.labels)) == set(range(10))
    example = digits.train[0]
    assert example["image"].shape == (8, 8, 1) and example["label"].dtype == np.int32


def test_digits_split_sizes_disjoint_and_complete():
    train, val, test = data._digits_indices()
    assert (len(train), len(val), len(test)) == (1258, 179, 360)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == 1797 == len(everything)


def test_digits_split_is_stratified(digits):
    per_class = np.bincount(np.concatenate([split.labels for split in digits]))
    for split, fraction in [(digits.train, 0.7), (digits.val, 0.1), (digits.test, 0.2)]:
        # Rounding per class moves each class by less than one example.
        assert np.all(np.abs(np.bincount(split.labels) - fraction * per_class) < 1)


def test_digits_split_never_changes(digits):
    # Pinned: a change here silently changes every reported digits result.
    train, val, test = data._digits_indices()
    assert train[:5].tolist() == [1225, 757, 1398, 190, 371]
    assert val[:5].tolist() == [10, 25, 32, 46, 50]
    assert test[:5].tolist() == [21, 24, 28, 34, 35]
    data._digits_indices.cache_clear()
    data.digits_splits.cache_clear()
    again = data.load("digits")
    for a, b in zip(digits, again, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_digits_read_from_the_shipped_csv_are_scikit_learns(monkeypatch):
    """`_digits_arrays` reads scikit-learn's CSV itself: the very arrays `load_digits()`
    returns, without importing `sklearn.datasets` (here made unimportable)."""
    from sklearn.datasets import load_digits

    want = load_digits()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # `import` raises ImportError
    images, labels = data._digits_arrays.__wrapped__()  # not the cached result
    np.testing.assert_array_equal(images, want.images)
    np.testing.assert_array_equal(labels, want.target)
    assert images.dtype == want.images.dtype and images.shape == (1797, 8, 8)


def test_digits_arrays_are_read_only(digits):
    with pytest.raises(ValueError):
        digits.train.images[0, 0, 0, 0] = 1.0


def test_digits_statistics_match_registry():
    mean, std = data.digits_statistics()
    info = data.get_info("digits")
    np.testing.assert_allclose(mean, info.mean, atol=1e-5)
    np.testing.assert_allclose(std, info.std, atol=1e-5)


# --------------------------------------------------------------------------------- search split


def test_search_split_halves(digits):
    weights, alphas = data.search_split(digits.train)
    assert (len(weights), len(alphas)) == (629, 629)
    np.testing.assert_array_equal(weights.images, digits.train.images[:629])
    np.testing.assert_array_equal(alphas.images, digits.train.images[629:])
    # The shuffled train order makes both halves contain every class.
    assert set(np.unique(weights.labels)) == set(np.unique(alphas.labels)) == set(range(10))


def test_search_split_portion_and_plain_sources():
    weights, alphas = data.search_split(ListSource(11), train_portion=0.3)
    assert (len(weights), len(alphas)) == (3, 8)  # floor(0.3 * 11), as in DARTS
    assert int(alphas[0]["label"]) == 3
    np.testing.assert_array_equal(
        data.batch_at(alphas, 4, 0, seed=0)["label"] >= 3, np.ones(4, bool)
    )
    with pytest.raises(IndexError):
        weights[3]
    with pytest.raises(ValueError):
        data.search_split(ListSource(4), train_portion=1.0)


# -------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("num_threads", [0, 1])
@pytest.mark.parametrize("start", [1, 9, 10, 23])
def test_resume_equals_uninterrupted(numbered, num_threads, start):
    # 103 // 10 = 10 steps per epoch: the starts cover mid-epoch, the last slot, an epoch
    # boundary and a later epoch.
    full = data.batches(numbered, 10, seed=7, num_threads=num_threads)
    uninterrupted = [next(full) for _ in range(start + 12)][start:]
    resumed = data.batches(numbered, 10, seed=7, start_step=start, num_threads=num_threads)
    for expected in uninterrupted:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_batches_equal_batch_at(digits):
    it = data.batches(digits.train, 32, seed=1, start_step=3)
    for step in range(3, 8):
        got, expected = next(it), data.batch_at(digits.train, 32, step, seed=1)
        np.testing.assert_array_equal(got["image"], expected["image"])
        assert got["image"].dtype == np.float32 and got["image"].shape == (32, 8, 8, 1)
        assert got["label"].dtype == np.int32 and got["label"].shape == (32,)


def test_every_example_once_per_epoch_and_reshuffled(numbered):
    steps = data.steps_per_epoch(numbered, 10)
    assert steps == 10
    epochs = [
        np.concatenate(
            [data.batch_at(numbered, 10, e * steps + s, seed=7)["label"] for s in range(steps)]
        )
        for e in range(3)
    ]
    for order in epochs:
        assert len(np.unique(order)) == 100  # 3 left over each epoch (drop_last)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    # Over epochs the dropped remainder changes, so no example is starved.
    assert len(np.unique(np.concatenate(epochs))) > 100


def test_batch_order_depends_on_seed(numbered):
    a = data.batch_at(numbered, 10, 0, seed=0)["label"]
    b = data.batch_at(numbered, 10, 0, seed=1)["label"]
    assert not np.array_equal(a, b)
    # Seeds above 32 bits are not truncated into each other.
    c = data.batch_at(numbered, 10, 0, seed=2**32)["label"]
    assert not np.array_equal(a, c)


def test_batches_from_a_plain_source():
    batch = next(data.batches(ListSource(9), 4, seed=0, num_threads=0))
    assert batch["image"].shape == (4, 2, 2, 1) and batch["label"].dtype == np.int32


def test_batch_larger_than_data_fails_early(numbered):
    with pytest.raises(ValueError, match="exceeds"):
        next(data.batches(numbered, 500, seed=0))


def test_eval_batches_cover_all_in_order_with_mask(numbered):
    batches = list(data.eval_batches(numbered, 25))
    assert [b["image"].shape[0] for b in batches] == [25] * 5
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(103))
    assert batches[-1]["mask"].sum() == 3 and not batches[-1]["image"][3:].any()


def test_eval_batches_overlap_fill_holds_real_examples_only(numbered):
    """fill="overlap" (the supernet, whose BatchNorm normalises with the batch's statistics):
    the last batch is completed with the examples before it, which its mask leaves uncounted."""
    batches = list(data.eval_batches(numbered, 25, fill="overlap"))
    assert [b["image"].shape[0] for b in batches] == [25] * 5
    np.testing.assert_array_equal(batches[-1]["label"], np.arange(78, 103))
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(103))
    with pytest.raises(ValueError, match="exceeds"):
        next(data.eval_batches(numbered, 500, fill="overlap"))


# ---------------------------------------------------------------------------------- augmentation


def _random_images(shape, seed=0) -> np.ndarray:
    # Continuous values: no two shifts or mirrors of an image coincide by accident.
    return np.random.default_rng(seed).uniform(0.05, 1.0, shape).astype(np.float32)


def _shifted(image: np.ndarray, dy: int, dx: int, padding: int) -> np.ndarray:
    """Independent crop: zero-pad by `padding`, take the window at offset (dy, dx)."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return padded[dy : dy + h, dx : dx + w]


def test_random_crop_is_one_of_the_padded_shifts():
    padding, images = 2, _random_images((200, 8, 8, 2))
    out = np.asarray(jax.jit(data.random_crop, static_argnums=2)(jax.random.key(0), images, 2))
    seen = set()
    for image, cropped in zip(images, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(cropped, _shifted(image, dy, dx, padding))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    # 200 draws over 25 offsets: all appear (each is missed with probability ~3e-4).
    assert len(seen) == 25


def test_random_crop_non_square_and_zero_padding_is_identity():
    images = _random_images((4, 6, 10, 3))
    out = data.random_crop(jax.random.key(1), images, 3)
    assert out.shape == images.shape
    np.testing.assert_array_equal(data.random_crop(jax.random.key(1), images, 0), images)


def test_flip_is_exact_mirror_or_identity():
    images = _random_images((64, 5, 7, 3))
    out = np.asarray(jax.jit(data.random_flip)(jax.random.key(3), images))
    mirrored = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, images, strict=True)])
    assert np.all(mirrored ^ kept)
    assert 10 < mirrored.sum() < 54  # both happen, about half each


def test_flip_forced_through_augment():
    images = _random_images((32, 4, 4, 1))
    out = np.asarray(data.augment(jax.random.key(5), images, flip=True))
    for o, x in zip(out, images, strict=True):
        assert np.array_equal(o, x) or np.array_equal(o, x[:, ::-1])
    np.testing.assert_array_equal(data.augment(jax.random.key(5), images), images)


def _zero_rectangles(out: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each image's zero set, asserting it is a full rectangle."""
    boxes = []
    for image in out:
        zero = image == 0
        assert np.all(zero == zero[..., :1])  # every channel cut alike
        rows, cols = np.flatnonzero(zero[..., 0].any(1)), np.flatnonzero(zero[..., 0].any(0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        assert zero[top:bottom, left:right].all() and zero.sum() == (
            (bottom - top) * (right - left) * image.shape[-1]
        )
        boxes.append((top, bottom, left, right))
    return boxes


@pytest.mark.parametrize("length, side", [(4, 4), (5, 4)])  # odd lengths cut length - 1
def test_cutout_zeroes_a_clipped_square_after_normalisation(length, side):
    info = dataclasses.replace(data.get_info("digits"), mean=(0.25,), std=(0.5,))
    images = np.ones((300, 8, 8, 1), np.float32)  # normalises to 1.5 everywhere
    fn = functools.partial(
        data.preprocess, info=info, train=True, crop_padding=0, cutout_length=length
    )
    out = np.asarray(jax.jit(fn)(jax.random.key(2), images))
    assert set(np.unique(out)) == {0.0, 1.5}  # the square is 0 in normalised space
    boxes = _zero_rectangles(out)
    heights = {b - t for t, b, _, _ in boxes}
    assert max(heights) == side and min(heights) < side  # full squares and border-clipped ones
    for top, bottom, left, right in boxes:
        assert bottom - top <= side and right - left <= side
        if top > 0 and bottom < 8:
            assert bottom - top == side
        if left > 0 and right < 8:
            assert right - left == side
    # The centre is uniform over the image, so clipped squares touch every border.
    assert {t for t, _, _, _ in boxes} >= {0} and {b for _, b, _, _ in boxes} >= {8}


def test_preprocess_order_crop_before_normalise_cutout_after():
    info = dataclasses.replace(
        data.get_info("digits"), mean=(0.25,), std=(0.5,), crop_padding=2, cutout_length=4
    )
    images = np.ones((64, 8, 8, 1), np.float32)
    out = np.asarray(
        jax.jit(data.preprocess, static_argnames=("info", "train"))(
            jax.random.key(4), images, info, train=True
        )
    )
    # 1.5: image pixels; -0.5: zero padding brought in by the crop, normalised (pixel-space fill);
    # 0: cutout, applied after normalisation.
    assert set(np.unique(out)) == {-0.5, 0.0, 1.5}
    # Same key, same draws: with mean 0 and std 1, preprocess is augment.
    plain = dataclasses.replace(info, mean=(0.0,), std=(1.0,))
    images = _random_images((16, 8, 8, 1))
    np.testing.assert_array_equal(
        data.preprocess(jax.random.key(9), images, plain, train=True, flip=True),
        data.augment(jax.random.key(9), images, crop_padding=2, flip=True, cutout_length=4),
    )


def test_default_config_flips_cifar_but_never_digits():
    """The default config leaves flipping to the dataset: a mirrored digit is another symbol."""
    from dnas import configlib, search_step

    for part in ("search", "train"):
        aug = search_step.Augmentation.from_config(configlib.default_config()[part])
        for name, flips in (("digits", False), ("svhn", False), ("cifar10", True)):
            info = data.get_info(name)
            channels = len(info.mean)
            info = dataclasses.replace(info, mean=(0.0,) * channels, std=(1.0,) * channels)
            images = _random_images((64, 8, 8, channels))
            kwargs = dict(crop_padding=0, flip=aug.flip, cutout_length=0)
            out = np.asarray(data.preprocess(jax.random.key(1), images, info, train=True, **kwargs))
            mirrored = [not np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
            assert any(mirrored) == flips, (part, name)


def test_preprocess_eval_is_normalisation_only():
    info = data.get_info("cifar10")
    images = _random_images((3, 32, 32, 3))
    expected = (images - np.array(info.mean, np.float32)) / np.array(info.std, np.float32)
    np.testing.assert_allclose(
        data.preprocess(None, images, info, train=False), expected, rtol=1e-6
    )


def test_preprocess_in_jit_with_step_keys():
    info = data.get_info("cifar10")
    fn = jax.jit(functools.partial(data.preprocess, info=info, train=True, cutout_length=16))
    images = _random_images((8, 32, 32, 3))
    root = jax.random.key(0)
    a = fn(jax.random.fold_in(root, 1), images)
    assert a.shape == images.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, fn(jax.random.fold_in(root, 1), images))  # resumable
    assert not np.array_equal(a, fn(jax.random.fold_in(root, 2), images))
    with pytest.raises(ValueError, match="key"):
        data.preprocess(None, images, info, train=True)


# ------------------------------------------------------------------------------------------ tfds


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_unprepared_tfds_dataset_fails_fast_and_says_how(name, tmp_path):
    info = data.get_info(name)
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotPreparedError) as err:
        data.load(name, data_dir=tmp_path)
    assert time.perf_counter() - start < 2
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert "pip install 'dnas[prepare]'" in message
    assert f"tfds build {info.tfds_name} --data_dir {tmp_path}" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert all(f in message for f in info.manual_files)


def test_tfds_data_dir_env_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir() == str(tmp_path)
    with pytest.raises(data.DatasetNotPreparedError, match=str(tmp_path)):
        data.load("cifar10")


@pytest.fixture
def mock_tfds(monkeypatch):
    """`tfds.testing.mock_data`, which serves random examples without files; its builders still
    report "not prepared", so only that check is bypassed and the rest is the real code path."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_is_prepared", lambda tfds_name, data_dir: True)
    return tfds.testing.mock_data


def test_tfds_cifar10_batches_through_real_path(mock_tfds, tmp_path):
    with mock_tfds(num_examples=12):
        splits = data.load("cifar10", data_dir=tmp_path)
    assert splits.val is None and len(splits.train) == len(splits.test) == 12
    assert isinstance(splits.train, data.ArraySource) and splits.train.images.dtype == np.uint8
    weights, _ = data.search_split(splits.train)
    batch = next(data.batches(weights, 4, seed=0))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["label"].dtype == np.int32 and np.all(
        (batch["label"] >= 0) & (batch["label"] < 10)
    )
    out = data.preprocess(jax.random.key(0), batch["image"], data.get_info("cifar10"), train=True)
    assert out.shape == (4, 32, 32, 3)


def test_tfds_imagenet16_keeps_first_120_classes(mock_tfds, tmp_path):
    with mock_tfds(num_examples=150):
        test = data.load("imagenet16-120", data_dir=tmp_path).test
        import tensorflow_datasets as tfds

        raw = tfds.data_source("imagenet_resized/16x16", split="validation", data_dir=tmp_path)
        expected = sorted(int(raw[i]["label"]) for i in range(len(raw)) if raw[i]["label"] < 120)
    assert 0 < len(test) < 150 and sorted(test.labels.tolist()) == expected
    assert test.images.shape[1:] == (16, 16, 3)


def test_tfds_imagenet_is_decoded_lazily_to_static_shapes(mock_tfds, tmp_path):
    with mock_tfds(num_examples=4):
        train = data.load("imagenet", data_dir=tmp_path).train
        assert isinstance(train, data.TfdsImageSource)
        weights, alphas = data.search_split(train)
        batch = data.batch_at(alphas, 2, 0, seed=0)
    assert len(weights) == len(alphas) == 2
    assert batch["image"].shape == (2, 224, 224, 3) and batch["image"].dtype == np.float32
