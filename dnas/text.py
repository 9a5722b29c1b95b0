"""Text data for language-model search: corpora and truncated-BPTT batches addressed by step.

Three layers, each usable alone, in the manner of `dnas.data`:

* **Corpora** (`load_corpus`, `CORPORA`): a `Corpus` is a vocabulary and the `train`, `valid` and
  `test` token-id streams, word or character level. Built in: `pydoc`, the English text of
  Python's own documentation (`pydoc_data.topics`, no download); a directory in the PTB /
  WikiText-2 layout (`load_text_dir`), tokenised as quark0/darts `rnn/data.py` does, so token
  ids match the reference's; and tensorflow-datasets' `tiny_shakespeare` (`load_tfds`).
* **Batches** (`batchify`, `Stream`, `batches`): the DARTS recurrent code's (quark0/darts
  `rnn/utils.py` batchify/get_batch, `rnn/train_search.py` and `rnn/train.py` loops), batch-major:
  the stream is cut into B rows (`rows_BN`) and read left to right in segments of about `bptt`
  tokens, the recurrent state carried from one segment to the next. Segment `step` is a pure
  function of (rows, bptt, mode, seed, step), so a resumed run sees exactly the batches an
  uninterrupted one would; every batch has the same static shape (padded, with a `mask`).
* **Evaluation** (`eval_segments`) and the metrics (`perplexity`, `bits_per_token`).

tensorflow-datasets is imported only when a tfds corpus is asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dnas import data

LEVELS = ("word", "char")
LENGTHS = ("fixed", "halve", "normal")  # the segment-length modes of `Stream`
EOS = "<eos>"  # appended to every line at word level, as the reference does
SPLITS = ("train", "valid", "test")  # a Corpus' splits, in the order their vocabulary is built
LAYOUT = tuple(f"{split}.txt" for split in SPLITS)  # the PTB / WikiText-2 directory layout

TextBatch = dict[str, np.ndarray]


class TextDataError(ValueError):
    """A text corpus cannot be read: a missing directory or file, bytes that are not UTF-8, an
    empty file, or a text too short for the batch asked of it."""


# ---------------------------------------------------------------------------------------- corpus


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised corpus: `vocab[i]` is the token of id `i`; the splits are read-only int32
    streams of ids, each the concatenation of its text's tokens in order.

    `provenance` says where the text came from (JSON-able), to be saved beside a run's results.
    """

    name: str
    level: str  # 'word' or 'char'
    vocab: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    provenance: dict[str, Any]

    def __post_init__(self) -> None:
        _check_level(self.level)
        for split, ids in self.splits().items():
            if ids.ndim != 1 or ids.dtype != np.int32:
                raise ValueError(f"{split}: need a 1-D int32 array, got {ids.dtype} {ids.shape}")
            if ids.size and not 0 <= ids.min() <= ids.max() < len(self.vocab):
                raise ValueError(f"{split}: ids outside the {len(self.vocab)}-token vocabulary")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def splits(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Token ids -> text: characters concatenated, or words separated by spaces with a line
        break for each `<eos>` (the inverse of the tokenisation, up to runs of whitespace)."""
        tokens = [self.vocab[i] for i in np.asarray(ids, np.int64).reshape(-1)]
        if self.level == "char":
            return "".join(tokens)
        lines, words = [], []
        for token in tokens:
            if token == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(token)
        return "".join(lines) + " ".join(words)

    def __repr__(self) -> str:  # the default would print every array and the whole vocabulary
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self.splits().items())
        return (
            f"Corpus(name={self.name!r}, level={self.level!r}, vocab_size={self.vocab_size:,}, "
            f"tokens: {sizes})"
        )


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid levels: {', '.join(LEVELS)}")


def _lines(text: str) -> list[str]:
    """The lines a Python text-mode file iterates over (universal newlines: \\r\\n and \\r are
    \\n), without their line breaks: the reference's `for line in open(path)`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":  # text ending in a line break (or empty): no line after it
        lines.pop()
    return lines


def _word_ids(texts: Sequence[str]) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """quark0/darts `rnn/data.py` Corpus: each line is `line.split() + ['<eos>']`; ids in order of
    first occurrence over the texts in turn (train, valid, test), so they equal the reference's."""
    index: dict[str, int] = {}
    streams = []
    for text in texts:
        ids = [index.setdefault(w, len(index)) for ln in _lines(text) for w in (*ln.split(), EOS)]
        streams.append(np.asarray(ids, np.int32))
    return tuple(index), streams


def _char_ids(texts: Sequence[str]) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """Every character is a token; the vocabulary is the sorted characters of all the texts."""
    points = [np.frombuffer(t.encode("utf-32-le"), np.uint32) for t in texts]
    vocab = np.unique(np.concatenate(points))  # sorted code points = sorted characters
    return tuple(map(chr, vocab)), [np.searchsorted(vocab, p).astype(np.int32) for p in points]


def _tokenise(name: str, level: str, texts: Sequence[str], provenance: dict[str, Any]) -> Corpus:
    _check_level(level)
    vocab, streams = (_word_ids if level == "word" else _char_ids)(texts)
    for ids in streams:
        ids.flags.writeable = False
    return Corpus(name, level, vocab, *streams, provenance=provenance)


# ------------------------------------------------------------------------------ PTB-layout dirs


def _read_text(path: str) -> tuple[str, bytes]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as e:
        raise TextDataError(
            f"{path}: not UTF-8 at byte offset {e.start} ({e.reason}); re-encode the file as "
            "UTF-8 (e.g. iconv -t UTF-8)"
        ) from None


def load_text_dir(path: str | os.PathLike, level: str = "word") -> Corpus:
    """The corpus in `path`/train.txt, valid.txt and test.txt (UTF-8): the layout of the DARTS
    recurrent code's PTB and WikiText-2 (awd-lstm-lm's `getdata.sh`).

    Word level tokenises exactly as the reference `Corpus` (each line split on whitespace plus
    `<eos>`; ids by first occurrence over train, then valid, then test), so ids match it; a
    corpus' own `<unk>` is an ordinary token. Char level: every character of the files, line
    breaks included and left as they are (a \\r\\n file has \\r tokens), is a token; the
    vocabulary is the sorted characters of the three files.

    Raises:
      TextDataError: the directory or one of the files is missing, a file is not UTF-8 (with the
        byte offset) or holds no token; the message names the path.
    """
    _check_level(level)
    root = os.path.abspath(os.fspath(path))
    if not os.path.isdir(root):
        raise TextDataError(
            f"text directory {root} does not exist (or is not a directory); it should hold "
            f"{', '.join(LAYOUT)}"
        )
    texts, files = [], {}
    for name in LAYOUT:
        file = os.path.join(root, name)
        if not os.path.isfile(file):
            raise TextDataError(
                f"{file} is missing: a text directory holds {', '.join(LAYOUT)} (the PTB / "
                "WikiText-2 layout)"
            )
        text, raw = _read_text(file)
        if not text:
            raise TextDataError(f"{file} is empty: every split needs at least one token")
        texts.append(text)
        files[name] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    provenance = {"source": "text_dir", "path": root, "files": files}
    return _tokenise(os.path.basename(root) or root, level, texts, provenance)


# ------------------------------------------------------------------------------- embedded (pydoc)

# The text: the values of `pydoc_data.topics.topics` (Python's own English reference topics)
# joined in sorted key order with "\n"; every topic ends with a line break, so one blank line
# separates topics. Split into contiguous train/valid/test at 90% and 95% of the characters,
# each cut moved forward to just after the next line break, so no line is split.
_PYDOC_SEPARATOR = "\n"
_PYDOC_CUTS = (0.90, 0.95)


@functools.cache
def pydoc_text() -> str:
    """The embedded corpus' whole text (it changes between Python versions: see `provenance`)."""
    from pydoc_data.topics import topics

    return _PYDOC_SEPARATOR.join(topics[key] for key in sorted(topics))


def _pydoc_bounds(text: str) -> tuple[int, int]:
    def cut(fraction: float) -> int:
        at = text.find("\n", int(fraction * len(text)))
        return len(text) if at < 0 else at + 1

    return cut(_PYDOC_CUTS[0]), cut(_PYDOC_CUTS[1])


def load_embedded(level: str = "char") -> Corpus:
    """`pydoc`: the English text of Python's standard library `pydoc_data.topics` (465,048
    characters and 103 distinct ones in Python 3.11.7), needing no download.

    Splits are contiguous: the first ~90% of the characters train, the next ~5% validate, the
    last ~5% test, each cut just after a line break. Word level tokenises its lines as
    `load_text_dir` does (full vocabulary, no `<unk>`). `provenance` records the Python version,
    the sha256 of the UTF-8 text and the split sizes, because the text differs between Python
    versions and results on it are comparable only on the same text.
    """
    text = pydoc_text()
    first, second = _pydoc_bounds(text)
    texts = (text[:first], text[first:second], text[second:])
    provenance = {
        "source": "pydoc_data.topics.topics",
        "python_version": platform.python_version(),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "characters": len(text),
        "split_characters": {k: len(t) for k, t in zip(SPLITS, texts, strict=True)},
        "construction": "topics joined in sorted key order with '\\n'; cut after the line "
        "break at or after 90% and 95% of the characters",
    }
    return _tokenise("pydoc" if level == "char" else "pydoc_words", level, texts, provenance)


# ------------------------------------------------------------------------------------------ tfds

_TFDS_SPLITS = dict(zip(SPLITS, ("train", "validation", "test"), strict=True))


def prepare_instructions(tfds_name: str, data_dir: str) -> str:
    """How to prepare a tfds text dataset in `data_dir` (preparing needs TensorFlow)."""
    return (
        f"text dataset {tfds_name!r} is not prepared in {data_dir}.\n"
        "Reading a prepared dataset needs no TensorFlow; preparing it does:\n"
        "  pip install 'dnas[prepare]'\n"
        f"  tfds build {tfds_name} --data_dir {data_dir} --file_format=array_record\n"
        "(array_record, not tfds's default tfrecord: dnas reads through tfds.data_source, which "
        "needs random access.)\n"
        "The built-in corpus needs none of this: --config.dataset=pydoc"
    )


def _is_prepared(tfds_name: str, data_dir: str) -> bool:
    import tensorflow_datasets as tfds

    return tfds.builder(tfds_name, data_dir=data_dir).is_prepared()


def _split_text(tfds_name: str, split: str, root: str) -> str:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=root, download=False)
    except NotImplementedError as e:  # prepared, but in a format without random access
        raise data.DatasetNotPreparedError(
            f"{tfds_name} in {root} cannot be read without TensorFlow ({e}); prepare it again "
            f"with --file_format=array_record:\n{prepare_instructions(tfds_name, root)}"
        ) from None
    # One example at a time: `__getitems__` is broken under tfds.testing.mock_data.
    parts = [source[i]["text"] for i in range(len(source))]
    return "".join(p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in parts)


def load_tfds(
    name: str = "tiny_shakespeare",
    data_dir: str | os.PathLike | None = None,
    *,
    level: str = "char",
) -> Corpus:
    """A tensorflow-datasets text corpus whose examples have a `text` feature (tiny_shakespeare:
    one example per split, tfds's own 90/5/5 cut of the 1.1 M characters), read without
    TensorFlow. The splits are the concatenated texts of `train`, `validation` and `test`.

    Args:
      name: the tfds name.
      data_dir: the tfds data directory (`dnas.data.resolve_data_dir`: default `$TFDS_DATA_DIR`
        or `~/tensorflow_datasets`).
      level: 'char' (the vocabulary is the sorted characters of all splits) or 'word'.

    Raises:
      DatasetNotPreparedError: not prepared in `data_dir` (checked before tfds could try to
        download it), or prepared in a format `tfds.data_source` cannot read.
    """
    _check_level(level)
    root = data.resolve_data_dir(data_dir)
    if not _is_prepared(name, root):
        raise data.DatasetNotPreparedError(prepare_instructions(name, root))
    texts = [_split_text(name, split, root) for split in _TFDS_SPLITS.values()]
    for split, text in zip(_TFDS_SPLITS.values(), texts, strict=True):
        if not text:
            raise TextDataError(f"{name} in {root}: split {split!r} holds no text")
    provenance = {
        "source": "tensorflow_datasets",
        "tfds_name": name,
        "data_dir": root,
        "split_characters": {k: len(t) for k, t in zip(_TFDS_SPLITS, texts, strict=True)},
        "sha256": hashlib.sha256("".join(texts).encode("utf-8")).hexdigest(),
    }
    return _tokenise(name, level, texts, provenance)


# -------------------------------------------------------------------------------------- registry


def _pydoc(*, data_dir: str | None, text_dir: str | None, level: str | None) -> Corpus:
    return load_embedded(level or "char")


def _pydoc_words(*, data_dir: str | None, text_dir: str | None, level: str | None) -> Corpus:
    if level not in (None, "word"):
        raise ValueError(f"corpus 'pydoc_words' is word level; for level={level!r} use 'pydoc'")
    return load_embedded("word")


def _tiny_shakespeare(*, data_dir: str | None, text_dir: str | None, level: str | None) -> Corpus:
    return load_tfds("tiny_shakespeare", data_dir, level=level or "char")


def _text_dir(*, data_dir: str | None, text_dir: str | None, level: str | None) -> Corpus:
    if not text_dir:
        raise TextDataError(
            "corpus 'text_dir' needs text_dir: a directory holding train.txt, valid.txt and "
            "test.txt (the PTB / WikiText-2 layout); set --config.data.text_dir=DIR"
        )
    return load_text_dir(text_dir, level or "word")


# Config string -> loader(*, data_dir, text_dir, level); level None: the corpus' own.
CORPORA: dict[str, Callable[..., Corpus]] = {
    "pydoc": _pydoc,  # char level, built in
    "pydoc_words": _pydoc_words,  # word level, built in
    "tiny_shakespeare": _tiny_shakespeare,  # char level, tensorflow-datasets
    "text_dir": _text_dir,  # a PTB / WikiText-2 layout directory, word level by default
}


def is_text_dataset(name: str) -> bool:
    """Whether `name` is a key of `CORPORA` (rather than an image dataset of `dnas.data`)."""
    return name in CORPORA


def load_corpus(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    text_dir: str | os.PathLike | None = None,
    level: str | None = None,
) -> Corpus:
    """The registered corpus `name`. Empty strings (a config's unset fields) count as None.

    Args:
      name: a key of `CORPORA`.
      data_dir: tensorflow-datasets' data directory (tfds corpora only).
      text_dir: the directory of `name='text_dir'`.
      level: 'word' or 'char'; None: the corpus' own (pydoc and tfds: char, text_dir: word).
    """
    try:
        loader = CORPORA[name]
    except KeyError:
        raise KeyError(f"unknown corpus {name!r}; valid corpora: {', '.join(CORPORA)}") from None
    if level:
        _check_level(level)
    return loader(data_dir=data_dir or None, text_dir=text_dir or None, level=level or None)


# --------------------------------------------------------------------------------------- batches


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """The stream as `batch_size` rows, int32 (B, N // B): row b is the b-th contiguous chunk;
    the last `N % B` tokens are dropped. The reference's `data.view(bsz, -1).t()` is the
    transpose (time-major); dnas is batch-major, so a batch shards along its leading axis."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"need a 1-D stream of token ids, got shape {ids.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(ids) < 2 * batch_size:
        raise TextDataError(
            f"{len(ids):,} tokens cannot fill {batch_size} rows of at least 2 tokens (an input "
            f"and its target): need at least {2 * batch_size:,}; use a smaller batch size"
        )
    columns = len(ids) // batch_size
    return ids[: batch_size * columns].astype(np.int32).reshape(batch_size, columns)


def _segment_count(columns: int, bptt: int) -> int:
    return math.ceil((columns - 1) / bptt)


@functools.lru_cache(maxsize=16)
def _epoch_plan(
    columns: int, bptt: int, mode: str, seed: int, delta: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the segments of `epoch`, read-only: a pure function of the arguments.

    Lengths are drawn from `default_rng([seed, epoch])`, vectorised per epoch (the same
    distribution as the reference's per-step draws, not its stream). Segments follow each other
    from column 0; one that would start at or past the last column wraps to 0.
    """
    steps = _segment_count(columns, bptt)
    if mode == "fixed":
        draws = np.full(steps, bptt, np.int64)
    else:
        rng = np.random.default_rng([seed, epoch])
        full = rng.random(steps) < 0.95
        if mode == "halve":  # train_search.py: seq_len = int(bptt or bptt / 2)
            draws = np.where(full, bptt, max(1, bptt // 2))
        else:  # train.py: max(5, int(normal(bptt or bptt / 2, 5))), at most bptt + delta
            mean = np.where(full, float(bptt), bptt / 2)
            draws = np.trunc(rng.normal(mean, 5.0)).astype(np.int64)
            draws = np.minimum(np.maximum(draws, 5), bptt + delta)
    starts = np.empty(steps, np.int64)
    lengths = np.empty(steps, np.int64)
    position, last = 0, columns - 1  # the last column is only ever a target
    for s in range(steps):
        if position >= last:
            position = 0
        starts[s], lengths[s] = position, min(int(draws[s]), last - position)
        position += lengths[s]
    starts.flags.writeable = lengths.flags.writeable = False
    return starts, lengths


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """Truncated back-propagation through time over `rows_BN` (`batchify`): training segments,
    a fixed number per epoch, each a pure function of `step`.

    Modes (`LENGTHS`) for the segment lengths, as the reference loops draw them:
      'fixed': bptt (the evaluation loop's segments; the last one of an epoch shorter);
      'halve': bptt with probability 0.95, else bptt // 2 (`rnn/train_search.py`);
      'normal': b = bptt w.p. 0.95 else bptt / 2; max(5, int(N(b, 5))), at most
        bptt + max_seq_len_delta (`rnn/train.py`).

    Every epoch has `steps_per_epoch` = ceil((N - 1) / bptt) segments (the number of 'fixed'
    ones) and starts at column 0; segments follow each other, each clipped to end at the last
    column, and one that would start there wraps to column 0 (so a 'halve' epoch may stop a few
    segments short of the end, and a 'normal' one may go round more than once). A segment at
    column 0 has `reset` 1: the model must zero its recurrent state, as the reference starts each
    epoch from a zero hidden state.

    `seed` matters to the random modes only: epoch e's lengths come from
    `np.random.default_rng([seed, e])`.
    """

    rows_BN: np.ndarray
    bptt: int
    _: dataclasses.KW_ONLY
    mode: str
    seed: int = 0
    max_seq_len_delta: int = 20

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows_BN)
        if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(
                f"rows_BN must be integer (B, N) with N >= 2 (batchify), got {rows.dtype} "
                f"{rows.shape}"
            )
        if self.mode not in LENGTHS:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(LENGTHS)}")
        if self.bptt < 1 or self.max_seq_len_delta < 0 or self.seed < 0:
            raise ValueError(
                f"need bptt >= 1, max_seq_len_delta >= 0 and seed >= 0, got {self.bptt}, "
                f"{self.max_seq_len_delta} and {self.seed}"
            )
        object.__setattr__(self, "rows_BN", rows.astype(np.int32, copy=False))

    @property
    def batch_size(self) -> int:
        return self.rows_BN.shape[0]

    @property
    def columns(self) -> int:
        return self.rows_BN.shape[1]

    @property
    def steps_per_epoch(self) -> int:
        return _segment_count(self.columns, self.bptt)

    @property
    def max_len(self) -> int:
        """The static (padded) length of every batch."""
        return self.bptt + self.max_seq_len_delta if self.mode == "normal" else self.bptt

    def segment(self, step: int) -> tuple[int, int, float]:
        """(start column, length, reset) of training segment `step`."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        epoch, slot = divmod(step, self.steps_per_epoch)
        starts, lengths = _epoch_plan(
            self.columns, self.bptt, self.mode, self.seed, self.max_seq_len_delta, epoch
        )
        start = int(starts[slot])
        return start, int(lengths[slot]), float(start == 0)

    def tokens(self, steps: int) -> int:
        """Real (target) tokens in the batches of steps 0 .. steps - 1, over all rows."""
        spe, total = self.steps_per_epoch, 0
        for epoch in range(-(-steps // spe)):
            _, lengths = _epoch_plan(
                self.columns, self.bptt, self.mode, self.seed, self.max_seq_len_delta, epoch
            )
            total += int(np.sum(lengths[: min(spe, steps - epoch * spe)]))
        return total * self.batch_size

    def batch(self, step: int) -> TextBatch:
        """Training batch `step`, every array with leading axis B:

        `inputs`, `targets` int32 (B, max_len): rows[:, start:start+length] and the same shifted
        by one, then 0 ids; `mask` float32 (B, max_len): 1 on the `length` real positions;
        `reset` float32 (B,): 1 where the recurrent state must start from zero; `length_scale`
        float32 (B,): length / bptt, the reference's learning-rate scale for the step.
        """
        start, length, reset = self.segment(step)
        b, width = self.batch_size, self.max_len
        inputs = np.zeros((b, width), np.int32)
        targets = np.zeros((b, width), np.int32)
        inputs[:, :length] = self.rows_BN[:, start : start + length]
        targets[:, :length] = self.rows_BN[:, start + 1 : start + 1 + length]
        mask = np.zeros((b, width), np.float32)
        mask[:, :length] = 1
        return {
            "inputs": inputs,
            "targets": targets,
            "mask": mask,
            "reset": np.full((b,), reset, np.float32),
            "length_scale": np.full((b,), length / self.bptt, np.float32),
        }


def batches(stream: Stream, start_step: int = 0) -> Iterator[TextBatch]:
    """Endless training batches from `start_step` on (`stream.batch(step)` for each step):
    started at `k`, it yields what one started at 0 yields from its `k`-th batch on."""
    step = start_step
    while True:
        yield stream.batch(step)
        step += 1


def eval_segments(ids: np.ndarray, batch_size: int, bptt: int) -> dict[str, np.ndarray]:
    """The whole of `ids` as `batchify(ids, batch_size)` read in 'fixed' segments, stacked for one
    `lax.scan` carrying the recurrent state (zero at the first segment): `inputs`, `targets`
    int32 (S, B, bptt), `mask` float32 (S, B, bptt), the last segment padded; S = ceil((N - 1)
    / bptt). `mask` sums to B * (N - 1), the target tokens.

    The reference evaluates validation in 10 rows and test in 1 and averages the loss over
    tokens; the mask-weighted mean, sum(nll * mask) / sum(mask), is that average (the
    reference divides by N rather than N - 1, a bias of 1 / N).
    """
    rows = batchify(ids, batch_size)
    b, n = rows.shape
    segments = _segment_count(n, bptt)
    width = segments * bptt
    inputs, targets = np.zeros((2, b, width), np.int32)  # padding: id 0, masked
    inputs[:, : n - 1], targets[:, : n - 1] = rows[:, :-1], rows[:, 1:]
    mask = np.zeros((b, width), np.float32)
    mask[:, : n - 1] = 1

    def stack(x_BW: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x_BW.reshape(b, segments, bptt).transpose(1, 0, 2))

    return {"inputs": stack(inputs), "targets": stack(targets), "mask": stack(mask)}


# --------------------------------------------------------------------------------------- metrics


def perplexity(mean_nll_nats: Any) -> Any:
    """exp of the mean negative log-likelihood per token (nats); numpy in, numpy out; inside jit
    (a JAX array) jnp."""
    if isinstance(mean_nll_nats, jax.Array):
        return jnp.exp(mean_nll_nats)
    return np.exp(mean_nll_nats)


def bits_per_token(mean_nll_nats: Any) -> Any:
    """The mean negative log-likelihood in bits (nats / ln 2): bits per character at char level."""
    return mean_nll_nats / math.log(2)
