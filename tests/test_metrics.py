"""Tests for dnas.metrics: writers, reading back, late fetching, the finite check, progress."""

import json
import math
import struct
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import metrics


def read_events(path) -> list:
    """Events of a TensorBoard file, read without TensorFlow: TFRecord framing is a little-endian
    uint64 length, a uint32 CRC of it, the payload (an `Event` proto) and the payload's CRC."""
    from tensorboardX.proto import event_pb2

    data = path.read_bytes()
    events, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        payload = data[offset + 12 : offset + 12 + length]
        events.append(event_pb2.Event.FromString(payload))
        offset += 12 + length + 4
    return events


def test_jsonl_records(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write_scalars(
            1, {"train/loss": jnp.float32(0.5), "lr": np.float64(0.1), "epoch": np.int32(2)}
        )
        writer.write_scalars(2, {"train/loss": 0.25, "ok": True})
        writer.write_text(2, "genotype", "Genotype(normal=[('sep_conv_3x3', 0)])")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2, 2]
    assert records[0]["train/loss"] == 0.5 and records[0]["lr"] == 0.1
    assert records[0]["epoch"] == 2 and isinstance(records[0]["epoch"], int)
    assert records[1] == {"step": 2, "time": records[1]["time"], "train/loss": 0.25, "ok": True}
    assert records[2]["genotype"].startswith("Genotype(")
    assert all(abs(r["time"] - records[0]["time"]) < 60 for r in records)
    assert not (tmp_path / "tb").exists()


def test_each_line_is_on_disk_before_close(tmp_path):
    writer = metrics.MetricWriter(tmp_path, tensorboard=False)
    writer.write_scalars(5, {"loss": 1.0})
    # Another reader (or a crash now) sees the whole line without close() or flush().
    assert metrics.read_metrics(tmp_path)[0]["loss"] == 1.0
    writer.close()
    writer.close()


def test_non_finite_values_are_strings_in_file_and_floats_when_read(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write_scalars(1, {"a": math.nan, "b": np.float32(np.inf), "c": -math.inf})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert '"a": "NaN"' in line and '"b": "Infinity"' in line and '"c": "-Infinity"' in line
    json.loads(line, parse_constant=pytest.fail)  # strict JSON: no bare NaN tokens
    (record,) = metrics.read_metrics(tmp_path)
    assert math.isnan(record["a"]) and record["b"] == math.inf and record["c"] == -math.inf


def test_bad_scalars_are_refused(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match=r"'w'.*scalar"):
            writer.write_scalars(1, {"w": jnp.ones(3)})
        with pytest.raises(ValueError, match="reserved"):
            writer.write_scalars(1, {"step": 3})


def test_tensorboard_event_file(tmp_path):
    with metrics.MetricWriter(tmp_path) as writer:
        writer.write_scalars(3, {"train/loss": 0.75, "val/accuracy": jnp.float32(0.5)})
        writer.write_scalars(4, {"train/loss": 0.5})
        writer.write_text(4, "genotype", "sep_conv_3x3")
        writer.write_hparams({"lr": 0.025, "space": "darts_cnn"})
    files = [p for p in (tmp_path / "tb").rglob("*") if "events" in p.name]
    assert len(files) == 1 and files[0].stat().st_size > 0
    scalars = {
        (event.step, value.tag): value.simple_value
        for event in read_events(files[0])
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    assert scalars == {(3, "train/loss"): 0.75, (3, "val/accuracy"): 0.5, (4, "train/loss"): 0.5}
    texts = [
        value.tag
        for event in read_events(files[0])
        for value in event.summary.value
        if not value.HasField("simple_value")
    ]
    assert any(t.startswith("genotype") for t in texts) and any("hparams" in t for t in texts)


def test_read_metrics_skips_torn_lines_and_resume_appends_cleanly(tmp_path, caplog):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
        for step in (1, 2, 3):
            writer.write_scalars(step, {"loss": 1.0 / step})
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:  # a crash in the middle of a line
        f.write('{"step": 4, "loss": 0.2')
    assert [r["step"] for r in metrics.read_metrics(path)] == [1, 2, 3]
    assert not caplog.records  # a torn last line is expected after a crash: no warning
    # The resumed run (from a checkpoint at step 2) starts on a new line and repeats step 3.
    with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
        writer.write_scalars(3, {"loss": 0.3})
        writer.write_scalars(4, {"loss": 0.2})
    records = metrics.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 3, 4]
    assert "not a JSON record" in caplog.text
    steps, values = metrics.series(records, "loss")
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])
    np.testing.assert_allclose(values, [1.0, 0.5, 0.3, 0.2])
    assert steps.dtype == np.int64 and values.dtype == np.float64


def test_series_of_text_and_missing_key():
    records = [{"step": 1, "g": "a"}, {"step": 2, "loss": 0.5}, {"step": 3, "g": "b"}]
    steps, values = metrics.series(records, "g")
    assert steps.tolist() == [1, 3] and values.tolist() == ["a", "b"]
    assert metrics.series(records, "absent")[0].size == 0


def test_late_fetcher_returns_previous_step():
    @jax.jit
    def step_fn(x):
        return x + 1, {"loss": x * 2.0, "vec": jnp.stack([x, x])}

    fetcher = metrics.LateFetcher()
    x = jnp.float32(0)
    fetched = []
    for step in (1, 2, 3):
        x, device_metrics = step_fn(x)
        fetched.append(fetcher.push(step, device_metrics))
    fetched.append(fetcher.flush())
    assert fetcher.flush() is None
    assert fetched[0] is None
    steps = [f[0] for f in fetched[1:]]
    assert steps == [1, 2, 3]
    # Step s saw x = s - 1: the values belong to the step they are reported with.
    assert [f[1]["loss"] for f in fetched[1:]] == [0.0, 2.0, 4.0]
    assert isinstance(fetched[1][1]["loss"], float)
    assert isinstance(fetched[1][1]["vec"], np.ndarray)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_raises_naming_step_metric_and_checkpoint(bad):
    values = {"train/loss": jnp.float32(bad), "val/accuracy": 0.5}
    with pytest.raises(FloatingPointError) as info:
        metrics.check_finite(1234, values, last_checkpoint_step=1000)
    message = str(info.value)
    assert "\n" not in message
    assert "step 1234" in message and "train/loss" in message and "val/accuracy" not in message
    assert "step 1000" in message and "learning rate" in message and "clipping" in message


def test_check_finite_passes_and_handles_arrays_and_no_checkpoint():
    metrics.check_finite(1, {"loss": 0.1, "vec": np.ones(3), "name": "x"}, last_checkpoint_step=0)
    with pytest.raises(FloatingPointError, match=r"vec has 1 non-finite of 3.*no checkpoint"):
        metrics.check_finite(2, {"vec": np.array([1.0, np.nan, 2.0])}, last_checkpoint_step=None)
    # Only the named keys are checked.
    metrics.check_finite(3, {"loss": 1.0, "alpha": math.nan}, last_checkpoint_step=0, keys=["loss"])


def test_progress_disabled_and_in_process(capsys):
    with metrics.Progress(10, initial=2, desc="search", disable=True) as progress:
        for step in range(3, 11):
            progress.update(step, loss=0.123456, acc="0.9")
    assert capsys.readouterr().err == ""
    progress = metrics.Progress(5, desc="train")
    for step in range(1, 6):
        progress.update(step, loss=np.float32(0.5))
    progress.write("epoch done")
    progress.close()
    err = capsys.readouterr().err
    assert "train" in err and "5/5" in err and "loss=0.5" in err and "epoch done" in err


def test_progress_in_a_pipe():
    """stderr is a pipe here (not a TTY): still works, and ends with the final count."""
    script = textwrap.dedent(
        """
        from dnas import metrics
        p = metrics.Progress(100, initial=40, desc="search")
        for step in range(41, 101):
            p.update(step, loss=0.25)
        p.close()
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "100/100" in result.stderr and "loss=0.25" in result.stderr


def test_the_loop_stops_at_a_nan_before_checkpointing_that_step(tmp_path):
    """A NaN loss at step 3 (read late, while step 4 runs) raises before step 4's checkpoint:
    the newest checkpoint is step 2's, the last good state, as the error says."""
    import ml_collections

    from dnas import checkpoint, loop

    config = ml_collections.ConfigDict(
        {"log_every_steps": 1, "checkpoint_every_steps": 2, "progress": False}
    )

    def step_fn(state, _):
        x = state["x"] + 1
        return {"x": x}, {"loss": jnp.where(x == 3, jnp.nan, 1.0)}

    ckpt = checkpoint.Checkpointer(str(tmp_path))
    writer = metrics.MetricWriter(str(tmp_path))
    with pytest.raises(FloatingPointError, match=r"step 3: loss=nan.*checkpoint: step 2"):
        loop.run(
            config, step_fn=jax.jit(step_fn), state={"x": jnp.zeros((), jnp.int32)},
            batches=iter([(0,)] * 10), start=0, total_steps=8, steps_per_epoch=100, ckpt=ckpt,
            writer=writer, desc="t", postfix=lambda m: {}, on_epoch_end=lambda s, t: None,
        )  # fmt: skip
    ckpt.wait_until_finished()
    assert ckpt.latest_step() == 2
    restored, _ = ckpt.restore({"x": jnp.zeros((), jnp.int32)})
    assert int(restored["x"]) == 2
    writer.close()
    ckpt.close()
    logged = [r["step"] for r in metrics.read_metrics(tmp_path / "metrics.jsonl")]
    assert 3 not in logged and max(logged) == 2  # the bad step is not logged as data
