"""Tests for dnas.text: corpora (PTB-layout directories, the embedded pydoc text, tfds offline),
the DARTS recurrent code's batching by step, evaluation segments and the metrics.

Expectations are written out by hand on toy streams (ids 0..22 in 2 rows, bptt 3), not derived
from the code under test; the random segment lengths are checked by their support and by
resuming, and the tfds path by `tfds.testing.mock_data` and by a dataset prepared offline.
"""

import hashlib
import json
import math
import time

import numpy as np
import pytest

from dnas import data, text

# ----------------------------------------------------------------------------------- batchify


def test_batchify_is_batch_major_and_drops_the_tail():
    rows = text.batchify(np.arange(23), 2)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(
        rows, [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]
    )


def test_batchify_too_short_says_how_many_tokens_are_needed():
    np.testing.assert_array_equal(text.batchify(np.arange(6), 3), [[0, 1], [2, 3], [4, 5]])
    with pytest.raises(text.TextDataError, match="need at least 6"):
        text.batchify(np.arange(5), 3)


# ----------------------------------------------------------------------------------- segments


def segments(stream: text.Stream, n: int) -> list[tuple[int, int, float]]:
    return [stream.segment(step) for step in range(n)]


def test_fixed_segments_by_hand():
    stream = text.Stream(text.batchify(np.arange(23), 2), 3, mode="fixed")
    # 11 columns: targets run to column 10, so ceil(10 / 3) = 4 segments, the last of length 1;
    # every epoch starts again at column 0 with a reset.
    assert stream.steps_per_epoch == 4 and stream.max_len == 3
    expected = [(0, 3, 1.0), (3, 3, 0.0), (6, 3, 0.0), (9, 1, 0.0)]
    assert segments(stream, 8) == expected * 2

    first = stream.batch(0)
    np.testing.assert_array_equal(first["inputs"], [[0, 1, 2], [11, 12, 13]])
    np.testing.assert_array_equal(first["targets"], [[1, 2, 3], [12, 13, 14]])
    np.testing.assert_array_equal(first["mask"], np.ones((2, 3)))
    np.testing.assert_array_equal(first["reset"], [1, 1])
    np.testing.assert_array_equal(first["length_scale"], [1, 1])

    last = stream.batch(3)  # the clipped segment, padded with id 0 and masked
    np.testing.assert_array_equal(last["inputs"], [[9, 0, 0], [20, 0, 0]])
    np.testing.assert_array_equal(last["targets"], [[10, 0, 0], [21, 0, 0]])
    np.testing.assert_array_equal(last["mask"], [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(last["reset"], [0, 0])
    np.testing.assert_allclose(last["length_scale"], [1 / 3, 1 / 3])
    for key, dtype in [("inputs", np.int32), ("targets", np.int32), ("mask", np.float32)]:
        assert last[key].dtype == dtype and last[key].shape == (2, 3)
    assert last["reset"].dtype == last["length_scale"].dtype == np.float32


def test_normal_segments_clip_and_wrap_by_hand():
    # bptt 3 and delta 2: max(5, int(N(b, 5))) capped at 3 + 2 makes every length exactly 5.
    # 25 tokens in 2 rows: 12 columns, targets to column 11, ceil(11 / 3) = 4 segments an epoch.
    stream = text.Stream(text.batchify(np.arange(25), 2), 3, mode="normal", max_seq_len_delta=2)
    assert stream.steps_per_epoch == 4 and stream.max_len == 5
    # 0-5, 5-10, 10-11 (clipped at the last column), then the next would start at column 11:
    # it wraps to 0 and resets; the next epoch starts at 0 again.
    expected = [(0, 5, 1.0), (5, 5, 0.0), (10, 1, 0.0), (0, 5, 1.0)]
    assert segments(stream, 8) == expected * 2

    second = stream.batch(1)
    np.testing.assert_array_equal(second["inputs"], [[5, 6, 7, 8, 9], [17, 18, 19, 20, 21]])
    np.testing.assert_array_equal(second["targets"], [[6, 7, 8, 9, 10], [18, 19, 20, 21, 22]])
    np.testing.assert_allclose(second["length_scale"], [5 / 3, 5 / 3])
    clipped = stream.batch(2)
    np.testing.assert_array_equal(clipped["inputs"], [[10, 0, 0, 0, 0], [22, 0, 0, 0, 0]])
    np.testing.assert_array_equal(clipped["targets"], [[11, 0, 0, 0, 0], [23, 0, 0, 0, 0]])
    np.testing.assert_array_equal(clipped["mask"], [[1, 0, 0, 0, 0]] * 2)
    wrapped = stream.batch(3)
    np.testing.assert_array_equal(wrapped["inputs"], [[0, 1, 2, 3, 4], [12, 13, 14, 15, 16]])
    np.testing.assert_array_equal(wrapped["reset"], [1, 1])


def long_stream(mode: str, seed: int = 0, bptt: int = 10) -> text.Stream:
    return text.Stream(text.batchify(np.arange(10_000), 2), bptt, mode=mode, seed=seed)


def unclipped_lengths(stream: text.Stream, steps: int) -> np.ndarray:
    last = stream.columns - 1
    return np.asarray([n for s, n, _ in segments(stream, steps) if s + n < last])


def test_halve_lengths_are_bptt_or_half():
    stream = long_stream("halve")
    assert stream.steps_per_epoch == 500 and stream.max_len == 10
    lengths = unclipped_lengths(stream, 1500)
    assert set(np.unique(lengths)) == {5, 10}
    assert 0.02 < np.mean(lengths == 5) < 0.09  # one time in 20


def test_normal_lengths_support():
    stream = long_stream("normal")  # bptt 10, at most 10 + 20; N(10, 5) truncated, at least 5
    assert stream.max_len == 30
    lengths = unclipped_lengths(stream, 1500)
    assert lengths.min() == 5 and lengths.max() <= 30
    assert 8 < lengths.mean() < 12
    batch = stream.batch(7)
    assert batch["inputs"].shape == batch["mask"].shape == (2, 30)
    _, length, _ = stream.segment(7)
    assert batch["mask"].sum() == 2 * length
    np.testing.assert_allclose(batch["length_scale"], length / 10)


@pytest.mark.parametrize("mode", text.LENGTHS)
def test_segments_tile_each_epoch_from_zero(mode):
    stream = long_stream(mode)
    starts, lengths, resets = np.asarray(segments(stream, 2 * stream.steps_per_epoch)).T
    assert starts[0] == 0 and starts[stream.steps_per_epoch] == 0
    follows = starts[1:] == starts[:-1] + lengths[:-1]
    # A segment either follows the previous one or wraps (to 0, with a reset).
    assert np.all(follows | (starts[1:] == 0))
    np.testing.assert_array_equal(resets, starts == 0)
    assert np.all(starts + lengths <= stream.columns - 1) and np.all(lengths >= 1)


@pytest.mark.parametrize("mode", ["halve", "normal"])
def test_lengths_depend_on_seed_and_epoch_only(mode):
    a, b = long_stream(mode, seed=3), long_stream(mode, seed=3)
    steps = range(0, 1200, 7)
    assert [a.segment(s) for s in steps] == [b.segment(s) for s in steps[::-1]][::-1]
    text._epoch_plan.cache_clear()
    assert [a.segment(s) for s in steps] == [b.segment(s) for s in steps]
    other = long_stream(mode, seed=4)
    assert [a.segment(s) for s in steps] != [other.segment(s) for s in steps]
    per_epoch = [[a.segment(e * 500 + s)[1] for s in range(100)] for e in range(2)]
    assert per_epoch[0] != per_epoch[1]


@pytest.mark.parametrize("mode", text.LENGTHS)
@pytest.mark.parametrize("start", [1, 3, 4, 9])
def test_resume_equals_uninterrupted(mode, start):
    rows = text.batchify(np.arange(61), 3)  # 20 columns, bptt 4: 5 steps an epoch
    stream = text.Stream(rows, 4, mode=mode, seed=11, max_seq_len_delta=3)
    full = text.batches(stream)
    expected = [next(full) for _ in range(start + 12)][start:]
    text._epoch_plan.cache_clear()  # a new process: nothing cached
    resumed = text.batches(text.Stream(rows, 4, mode=mode, seed=11, max_seq_len_delta=3), start)
    for want in expected:
        got = next(resumed)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_stream_rejects_bad_arguments():
    rows = text.batchify(np.arange(20), 2)
    with pytest.raises(ValueError, match="valid modes: fixed, halve, normal"):
        text.Stream(rows, 3, mode="random")
    with pytest.raises(ValueError, match="bptt"):
        text.Stream(rows, 0, mode="fixed")
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        text.Stream(np.arange(20), 3, mode="fixed")


# ------------------------------------------------------------------------------------ eval


def test_eval_segments_by_hand():
    out = text.eval_segments(np.arange(23), 2, 3)
    assert out.keys() == {"inputs", "targets", "mask"}
    assert out["inputs"].shape == out["targets"].shape == out["mask"].shape == (4, 2, 3)
    assert out["inputs"].dtype == out["targets"].dtype == np.int32
    assert out["mask"].dtype == np.float32
    np.testing.assert_array_equal(out["inputs"][0], [[0, 1, 2], [11, 12, 13]])
    np.testing.assert_array_equal(out["targets"][2], [[7, 8, 9], [18, 19, 20]])
    np.testing.assert_array_equal(out["inputs"][3], [[9, 0, 0], [20, 0, 0]])
    np.testing.assert_array_equal(out["targets"][3], [[10, 0, 0], [21, 0, 0]])
    np.testing.assert_array_equal(out["mask"][3], [[1, 0, 0], [1, 0, 0]])
    assert out["mask"].sum() == 2 * (11 - 1)


@pytest.mark.parametrize(("n", "batch_size", "bptt"), [(1000, 10, 35), (517, 1, 35), (64, 4, 5)])
def test_eval_segments_cover_every_target_once(n, batch_size, bptt):
    out = text.eval_segments(np.arange(n), batch_size, bptt)
    columns = n // batch_size
    assert out["inputs"].shape == (math.ceil((columns - 1) / bptt), batch_size, bptt)
    assert out["mask"].sum() == batch_size * (columns - 1)
    real = out["mask"] == 1
    np.testing.assert_array_equal(out["targets"][real], out["inputs"][real] + 1)
    every_target = text.batchify(np.arange(n), batch_size)[:, 1:].reshape(-1)
    np.testing.assert_array_equal(np.sort(out["targets"][real]), np.sort(every_target))


# ------------------------------------------------------------------------------------ metrics


def test_metrics():
    assert text.perplexity(math.log(100.0)) == pytest.approx(100.0)
    assert text.bits_per_token(math.log(2.0)) == pytest.approx(1.0)
    np.testing.assert_allclose(text.perplexity(np.log([2.0, 8.0])), [2.0, 8.0])
    np.testing.assert_allclose(text.bits_per_token(np.log([2.0, 8.0])), [1.0, 3.0])


# --------------------------------------------------------------------------------- text dirs


def write_dir(root, **files: str | bytes):
    root.mkdir(exist_ok=True)
    for name, content in files.items():
        path = root / f"{name}.txt"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def test_text_dir_word_level_as_the_reference(tmp_path):
    # PTB lines start with a space; a blank line is one <eos>; a last line without a line break
    # still counts; <unk> is an ordinary token; \r\n is a line break (universal newlines).
    root = write_dir(tmp_path / "toy", train=" a b\nb  c\n", valid="c d\r\n\n", test="a e\n<unk> b")
    corpus = text.load_text_dir(root)
    assert corpus.name == "toy" and corpus.level == "word"
    assert corpus.vocab == ("a", "b", "<eos>", "c", "d", "e", "<unk>")
    assert corpus.vocab_size == 7
    np.testing.assert_array_equal(corpus.train, [0, 1, 2, 1, 3, 2])
    np.testing.assert_array_equal(corpus.valid, [3, 4, 2, 2])
    np.testing.assert_array_equal(corpus.test, [0, 5, 2, 6, 1, 2])
    assert all(ids.dtype == np.int32 for ids in corpus.splits().values())
    assert corpus.decode(corpus.train) == "a b\nb c\n"
    files = corpus.provenance["files"]
    assert files["train.txt"]["bytes"] == 10
    assert files["test.txt"]["sha256"] == hashlib.sha256(b"a e\n<unk> b").hexdigest()
    json.dumps(corpus.provenance)
    with pytest.raises(ValueError):
        corpus.train[0] = 1  # read-only


def test_text_dir_char_level(tmp_path):
    root = write_dir(tmp_path / "toy", train="ab\n", valid="ba", test="c\n")
    corpus = text.load_text_dir(root, level="char")
    assert corpus.vocab == ("\n", "a", "b", "c")
    np.testing.assert_array_equal(corpus.train, [1, 2, 0])
    np.testing.assert_array_equal(corpus.valid, [2, 1])
    np.testing.assert_array_equal(corpus.test, [3, 0])
    assert corpus.decode(corpus.train) == "ab\n"


def test_text_dir_non_ascii_characters(tmp_path):
    root = write_dir(tmp_path / "toy", train="é—a\n", valid="ß", test="a")
    corpus = text.load_text_dir(root, level="char")
    assert corpus.vocab == tuple(sorted("é—a\nß"))
    assert corpus.decode(corpus.train) == "é—a\n"


GOOD = {"train": "a b\n", "valid": "b\n", "test": "a\n"}


@pytest.mark.parametrize(
    ("files", "named", "says"),
    [
        (None, "toy", "does not exist"),
        ({"train": "a\n", "test": "a\n"}, "valid.txt", "is missing: a text directory holds"),
        ({**GOOD, "valid": b"ok\n\xff\xfe"}, "valid.txt", "not UTF-8 at byte offset 3"),
        ({**GOOD, "test": ""}, "test.txt", "is empty"),
    ],
)
@pytest.mark.parametrize("level", text.LEVELS)
def test_text_dir_errors_name_the_file_fast(tmp_path, files, named, says, level):
    root = tmp_path / "toy"
    if files is not None:
        write_dir(root, **files)
    start = time.perf_counter()
    with pytest.raises(text.TextDataError) as err:
        text.load_text_dir(root, level=level)
    assert time.perf_counter() - start < 1
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert says in message and str(root / named if files else root) in message


# ---------------------------------------------------------------------------------- embedded


def test_embedded_text_is_the_sorted_topics():
    from pydoc_data.topics import topics

    assert text.pydoc_text() == "\n".join(topics[k] for k in sorted(topics))


def test_embedded_char_corpus():
    corpus = text.load_embedded()
    text.pydoc_text.cache_clear()
    again = text.load_corpus("pydoc")
    for split, ids in corpus.splits().items():
        np.testing.assert_array_equal(ids, again.splits()[split])
    assert corpus.vocab == again.vocab == tuple(sorted(set(text.pydoc_text())))
    assert corpus.name == "pydoc" and corpus.level == "char"

    whole = text.pydoc_text()
    train, valid, test = (corpus.decode(ids) for ids in corpus.splits().values())
    assert train + valid + test == whole  # contiguous, in order, covering the text
    assert train.endswith("\n") and valid.endswith("\n")  # cut at line breaks
    assert 0.89 < len(train) / len(whole) < 0.91 and 0.04 < len(valid) / len(whole) < 0.06
    used = np.unique(np.concatenate(list(corpus.splits().values())))
    np.testing.assert_array_equal(used, np.arange(corpus.vocab_size))

    prov = corpus.provenance
    assert prov["python_version"].count(".") == 2
    assert len(prov["sha256"]) == 64 and int(prov["sha256"], 16) >= 0
    assert prov["sha256"] == hashlib.sha256(whole.encode("utf-8")).hexdigest()
    assert prov["characters"] == len(whole)
    assert prov["split_characters"] == {"train": len(train), "valid": len(valid), "test": len(test)}
    json.dumps(prov)


def test_embedded_word_corpus():
    corpus = text.load_corpus("pydoc_words")
    assert corpus.level == "word" and corpus.name == "pydoc_words"
    ids = np.concatenate(list(corpus.splits().values()))
    np.testing.assert_array_equal(np.unique(ids), np.arange(corpus.vocab_size))
    eos = corpus.vocab.index("<eos>")
    assert np.sum(ids == eos) == text.pydoc_text().count("\n")
    assert corpus.vocab[:3] == ("The", '"assert"', "statement")  # first occurrence order
    assert corpus.decode(corpus.train[:4]) == 'The "assert" statement\n'


# -------------------------------------------------------------------------------------- tfds


def test_unprepared_tfds_corpus_fails_fast_and_says_how(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotPreparedError) as err:
        text.load_corpus("tiny_shakespeare", data_dir=tmp_path)
    assert time.perf_counter() - start < 2
    message = str(err.value)
    assert f"tfds build tiny_shakespeare --data_dir {tmp_path} --file_format=array_record" in (
        message
    )
    assert "pip install 'dnas[prepare]'" in message


def test_tfds_mock_data(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(text, "_is_prepared", lambda name, data_dir: True)
    with tfds.testing.mock_data(num_examples=1):
        corpus = text.load_tfds("tiny_shakespeare", data_dir=tmp_path)
        raw = {
            split: tfds.data_source("tiny_shakespeare", split=split, data_dir=tmp_path)[0]["text"]
            for split in ("train", "validation", "test")
        }
    assert corpus.level == "char" and corpus.name == "tiny_shakespeare"
    assert corpus.decode(corpus.train) == raw["train"]
    assert corpus.decode(corpus.valid) == raw["validation"]
    assert corpus.vocab == tuple(sorted(set("".join(raw.values()))))
    assert corpus.provenance["data_dir"] == str(tmp_path)


SHAKESPEARE = {
    "train": "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "validation": "All:\nSpeak, speak.\n",
    "test": "First Citizen:\nYou are all resolved rather to die than to famish?\n",
}


def test_tfds_prepared_offline(monkeypatch, tmp_path):
    """A real tiny_shakespeare directory (array_record, prepared without TensorFlow from the
    texts above instead of the download): the whole read path, bytes included."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.datasets.tiny_shakespeare import tiny_shakespeare_dataset_builder

    def split_generators(self, dl_manager):
        return [
            tfds.core.SplitGenerator(name=k, gen_kwargs={"split_key": k, "split_text": v})
            for k, v in SHAKESPEARE.items()
        ]

    builder = tiny_shakespeare_dataset_builder.Builder
    monkeypatch.setattr(builder, "_split_generators", split_generators)
    tfds.builder(
        "tiny_shakespeare", data_dir=tmp_path, file_format="array_record"
    ).download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # read at call time, not import
    corpus = text.load_corpus("tiny_shakespeare")
    assert corpus.decode(corpus.train) == SHAKESPEARE["train"]
    assert corpus.decode(corpus.valid) == SHAKESPEARE["validation"]
    assert corpus.decode(corpus.test) == SHAKESPEARE["test"]
    assert corpus.vocab == tuple(sorted(set("".join(SHAKESPEARE.values()))))
    words = text.load_tfds(data_dir=tmp_path, level="word")
    assert words.vocab[:3] == ("First", "Citizen:", "<eos>")


def test_tfds_prepared_as_tfrecord_says_to_prepare_again(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(text, "_is_prepared", lambda name, data_dir: True)

    def tfrecord_only(*args, **kwargs):
        raise NotImplementedError("file format FileFormat.TFRECORD is not supported")

    monkeypatch.setattr(tfds, "data_source", tfrecord_only)
    with pytest.raises(data.DatasetNotPreparedError, match="--file_format=array_record"):
        text.load_tfds(data_dir=tmp_path)


# ---------------------------------------------------------------------------------- registry


def test_registry():
    assert set(text.CORPORA) == {"pydoc", "pydoc_words", "tiny_shakespeare", "text_dir"}
    assert text.is_text_dataset("pydoc") and not text.is_text_dataset("cifar10")
    assert not set(text.CORPORA) & set(data.DATASETS)
    with pytest.raises(KeyError, match="valid corpora: pydoc, pydoc_words, tiny_shakespeare"):
        text.load_corpus("ptb")
    with pytest.raises(text.TextDataError, match="needs text_dir"):
        text.load_corpus("text_dir")
    with pytest.raises(text.TextDataError, match="needs text_dir"):
        text.load_corpus("text_dir", text_dir="")  # a config's unset field
    with pytest.raises(ValueError, match="valid levels: word, char"):
        text.load_corpus("pydoc", level="byte")
    with pytest.raises(ValueError, match="word level"):
        text.load_corpus("pydoc_words", level="char")
    assert text.load_corpus("pydoc", level="word").level == "word"


def test_registry_text_dir(tmp_path):
    root = write_dir(tmp_path / "penn", **GOOD)
    words = text.load_corpus("text_dir", text_dir=str(root), data_dir="", level="")
    assert words.level == "word" and words.name == "penn"
    assert words.vocab == ("a", "b", "<eos>")
    chars = text.load_corpus("text_dir", text_dir=root, level="char")
    assert chars.vocab == ("\n", " ", "a", "b")


def test_corpus_repr_is_short():
    shown = repr(text.load_corpus("pydoc_words"))
    assert shown.startswith("Corpus(name='pydoc_words', level='word', vocab_size=")
    assert len(shown) < 200


def test_stream_tokens_count_the_real_targets():
    from dnas import text

    rows = text.batchify(np.arange(230), 2)
    for mode in text.LENGTHS:
        stream = text.Stream(rows, 7, mode=mode, seed=3)
        steps = 2 * stream.steps_per_epoch + 3
        direct = sum(stream.segment(k)[1] for k in range(steps)) * 2
        assert stream.tokens(steps) == direct
        assert int(stream.batch(5)["mask"].sum()) == 2 * stream.segment(5)[1]
