"""Metrics: writers (JSON lines + TensorBoard), late fetching, the non-finite check, progress.

Metrics are computed inside the jitted step as a dict of scalars (`types.Metrics`) and fetched
late (STYLE rule 9, after nanodo's `train.py` and big_vision): the loop dispatches step n, then
reads step n-1's metrics with `LateFetcher`, so the host never waits for the step it just queued
and the device is never idle while the host writes logs.

On disk, under the workdir:

* `metrics.jsonl`: one JSON object per `write_scalars`/`write_text` call,
  `{"step": 100, "time": 1712345678.9, "train/loss": 0.53, ...}`. Each line is flushed when
  written, so a crash loses at most the line being written; `read_metrics` skips such a torn line.
  Non-finite floats are written as the strings "NaN", "Infinity" and "-Infinity" (strict JSON has
  no such numbers, and `null` would hide whether a loss diverged or was undefined);
  `read_metrics` turns them back into floats.
* `tb/events.out.tfevents.*`: the same scalars and texts for TensorBoard, through tensorboardX
  (which needs no TensorFlow; imported only when used).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dnas.types import Metrics

_log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
_RESERVED = ("step", "time")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

Scalar = float | int | bool | np.number | np.bool_ | np.ndarray | jax.Array


# --------------------------------------------------------------------------------------------------
# Writing.


class MetricWriter:
    """Appends scalars and texts to `<workdir>/metrics.jsonl` and TensorBoard (`<workdir>/tb/`).

    Appending means a resumed run continues the same file; the steps it logged between its last
    checkpoint and the crash appear twice, and `series` keeps the later value.
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        # A crash mid-line leaves a torn last line; start on a fresh line so that the torn one
        # stays alone (and skippable) instead of swallowing this run's first record.
        torn = (
            self.path.exists()
            and self.path.stat().st_size > 0
            and not _ends_with_newline(self.path)
        )
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        if torn:
            self._file.write("\n")
        self._tb = None
        if tensorboard:
            import tensorboardX  # lazy: only runs that log to TensorBoard pay for the import

            self._tb = tensorboardX.SummaryWriter(
                logdir=os.fspath(self.workdir / TENSORBOARD_DIR), flush_secs=30
            )
        self._closed = False

    def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
        """Writes one record of scalars (Python, numpy or 0-d jax values) for `step`."""
        values = {}
        for name, value in scalars.items():
            if name in _RESERVED:
                raise ValueError(f"metric name {name!r} is reserved for the record's own field")
            values[name] = _python_scalar(name, value)
        step, now = int(step), time.time()
        self._write_line(
            {"step": step, "time": now, **{k: _json_float(v) for k, v in values.items()}}
        )
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, float(value), global_step=step, walltime=now)

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Writes a text (e.g. the genotype at each epoch) as `{"step": ..., tag: text}`."""
        if tag in _RESERVED:
            raise ValueError(f"text tag {tag!r} is reserved for the record's own field")
        step, now = int(step), time.time()
        self._write_line({"step": step, "time": now, tag: str(text)})
        if self._tb is not None:
            self._tb.add_text(tag, _markdown_code(str(text)), global_step=step, walltime=now)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Shows the run's hyper-parameters in TensorBoard's text tab (tag `hparams`).

        Only TensorBoard: on disk, the config is `<workdir>/config.json`, written by the stage.
        """
        if self._tb is not None:
            text = json.dumps(hparams, indent=2, sort_keys=True, default=str)
            self._tb.add_text("hparams", _markdown_code(text), global_step=0)

    def flush(self) -> None:
        """Pushes everything written so far to disk (fsync for the JSON lines)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes both outputs; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_line(self, record: dict[str, Any]) -> None:
        # allow_nan=False: non-finite values were made strings; anything left would be invalid JSON.
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        # A flush per line (not an fsync: that is per `flush()`): a crashed process loses at most
        # the line being written.
        self._file.flush()


def _python_scalar(name: str, value: Any) -> bool | int | float:
    """A Python bool/int/float from a Python, numpy or 0-d jax scalar; ValueError otherwise."""
    if isinstance(value, bool | int | float):
        return value
    array = np.asarray(value)  # a jax array: device_get, blocking; use LateFetcher upstream
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        raise ValueError(
            f"metric {name!r} must be a real scalar; got {array.dtype} with shape {array.shape}"
        )
    return array.item()


def _json_float(value: bool | int | float) -> bool | int | float | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _markdown_code(text: str) -> str:
    # TensorBoard renders text as markdown, where `sep_conv_3x3` would turn into italics; an
    # indented block is shown verbatim.
    return "\n".join("    " + line for line in text.splitlines())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# --------------------------------------------------------------------------------------------------
# Reading.


def read_metrics(workdir_or_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` (or of a workdir's), in file order.

    A line that does not parse is skipped: the last one may have been cut by a crash (skipped
    silently); one in the middle (the torn end of a run that was later resumed) is skipped with a
    warning. "NaN"/"Infinity"/"-Infinity" strings come back as floats.
    """
    path = Path(workdir_or_path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number != len(lines):
                _log.warning("%s:%d is not a JSON record (a torn write?); skipped", path, number)
            continue
        records.append(
            {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}
        )
    return records


def series(records: Iterable[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """`(steps, values)` of `key` over the records that have it, sorted by step.

    A step logged twice (a resumed run repeats the steps after its last checkpoint) keeps its last
    value. Values are float64, or an object array if `key` holds text.
    """
    by_step: dict[int, Any] = {}
    for record in records:
        if key in record and record[key] is not None:
            by_step[int(record["step"])] = record[key]
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    numeric = all(isinstance(v, int | float) for v in values)
    return (
        np.asarray(steps, dtype=np.int64),
        np.asarray(values, dtype=np.float64 if numeric else object),
    )


# --------------------------------------------------------------------------------------------------
# Late fetching and the non-finite check.


class LateFetcher:
    """Holds one step's device metrics until the next step is dispatched, then fetches them.

        fetcher = metrics.LateFetcher()
        for step in range(start + 1, total + 1):
            state, device_metrics = step_fn(state, batch)  # dispatched, not finished
            fetched = fetcher.push(step, device_metrics)  # waits for step - 1 only
            if fetched is not None:
                report(*fetched)
        fetched = fetcher.flush()  # the last step's

    Fetched metrics are numpy: 0-d arrays become Python scalars, others stay arrays.
    """

    def __init__(self) -> None:
        self._pending: tuple[int, Any] | None = None

    def push(self, step: int, device_metrics: Metrics) -> tuple[int, dict[str, Any]] | None:
        """Keeps `device_metrics` of `step`; returns the previous step's on the host, if any."""
        previous, self._pending = self._pending, (int(step), device_metrics)
        return None if previous is None else _fetch(*previous)

    def flush(self) -> tuple[int, dict[str, Any]] | None:
        """Fetches the held metrics now (before a checkpoint, at the end); None if none held."""
        previous, self._pending = self._pending, None
        return None if previous is None else _fetch(*previous)


def _fetch(step: int, device_metrics: Any) -> tuple[int, Any]:
    host = jax.device_get(device_metrics)
    host = jax.tree.map(
        lambda x: x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x, host
    )
    return step, host


def check_finite(
    step: int,
    metrics: Mapping[str, Any],
    *,
    last_checkpoint_step: int | None,
    keys: Iterable[str] | None = None,
) -> None:
    """Raises `FloatingPointError` if a metric (of `keys`, default all numeric ones) is NaN or
    infinite, naming the step, the metric and the last good checkpoint, and what to try."""
    bad = []
    for name in metrics if keys is None else keys:
        array = np.asarray(metrics[name])
        if array.dtype.kind not in "biufc":
            continue
        finite = np.isfinite(array)
        if not finite.all():
            if array.ndim == 0:
                bad.append(f"{name}={array.item()}")
            else:
                bad.append(f"{name} has {int((~finite).sum())} non-finite of {array.size}")
    if bad:
        if last_checkpoint_step is None:
            resume = "no checkpoint saved yet"
        else:
            resume = f"last good checkpoint: step {last_checkpoint_step}, where a rerun resumes"
        raise FloatingPointError(
            f"Non-finite metric at step {int(step)}: {', '.join(bad)} ({resume}). Try a lower "
            "learning rate, gradient clipping (a smaller clip norm), or check the data for "
            "NaN/inf or mislabelled inputs."
        )


# --------------------------------------------------------------------------------------------------
# Progress.


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (a progress bar redraws there; a log file gets lines)."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class Means:
    """Running means of some metrics over the steps since the last `pop` (an epoch's)."""

    def __init__(self, keys: Iterable[str]):
        self.keys = tuple(keys)
        self._sums = dict.fromkeys(self.keys, 0.0)
        self._counts = dict.fromkeys(self.keys, 0)

    def add(self, host: Mapping[str, Any]) -> None:
        for k in self.keys:
            if k in host and np.ndim(host[k]) == 0:
                self._sums[k] += float(host[k])
                self._counts[k] += 1

    def pop(self) -> dict[str, float]:
        """The means of the metrics seen since the last call (those seen at all), and a reset."""
        out = {k: self._sums[k] / self._counts[k] for k in self.keys if self._counts[k]}
        self._sums = dict.fromkeys(self.keys, 0.0)
        self._counts = dict.fromkeys(self.keys, 0)
        return out


def epoch_line(
    desc: str,
    epoch: int,
    epochs: int,
    step: int,
    train: Mapping[str, float],
    val: Mapping[str, float] | None,
    seconds: float,
) -> str:
    """The line a non-interactive log gets at the end of an epoch: the mean training loss and
    accuracy over the epoch's steps, and loss and accuracy over the whole validation split, e.g.
    `search epoch 3/15 (step 27): train loss 1.234 acc 55.1% | val loss 1.101 acc 60.3% | 8.2 s`
    (a language model's: `| val loss 1.101 ppl 3.007`).
    """
    parts = [f"{desc} epoch {epoch}/{epochs} (step {step}):"]
    if "train/loss" in train:
        parts.append(f"train loss {train['train/loss']:.4g}")
    if "train/accuracy" in train:
        parts.append(f"acc {100 * train['train/accuracy']:.1f}%")
    if val is not None:  # None: no validation split (tfds datasets in a retraining)
        parts.append(f"| val loss {val['loss']:.4g}")
        if "accuracy" in val:
            parts.append(f"acc {100 * val['accuracy']:.1f}%")
        if "perplexity" in val:  # a language model's
            parts.append(f"ppl {val['perplexity']:.4g}")
    parts.append(f"| {seconds:.1f} s")
    return " ".join(parts)


class Progress:
    """A tqdm progress bar over steps: rate, ETA and a few metrics, on stderr.

    `update` takes the absolute step, so a resumed run (`initial=start`) counts from where it was.
    Outside a terminal (a pipe, a log file) it redraws at most every 30 s, so logs get a line now
    and then instead of one per step; `disable=True` turns it off.
    """

    def __init__(
        self,
        total_steps: int | None,
        *,
        initial: int = 0,
        desc: str | None = None,
        disable: bool = False,
    ):
        import tqdm  # lazy: only runs that show progress import it

        tty = stderr_is_terminal()
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial,
            desc=desc,
            unit="step",
            disable=disable,
            file=sys.stderr,
            dynamic_ncols=tty,
            mininterval=0.1 if tty else 30.0,
            # ETA from the average rate since start, not a recent window: steps after an epoch's
            # evaluation or a checkpoint are slower, and the average is what predicts the end.
            smoothing=0.0,
        )

    def update(self, step: int, **postfix: Any) -> None:
        """Moves the bar to `step`, showing `postfix` (numbers formatted to 4 digits)."""
        if postfix:
            shown = {
                k: f"{v:.4g}" if isinstance(v, float | np.floating) else v
                for k, v in postfix.items()
            }
            self._bar.set_postfix(shown, refresh=False)
        delta = int(step) - self._bar.n
        if delta > 0:
            self._bar.update(delta)

    def write(self, text: str) -> None:
        """Prints a line without breaking the bar."""
        self._bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "LateFetcher",
    "Means",
    "MetricWriter",
    "Progress",
    "check_finite",
    "epoch_line",
    "read_metrics",
    "series",
    "stderr_is_terminal",
]
