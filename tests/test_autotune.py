"""The autotuner (dnas/autotune.py): every form of an op is the same function, the fastest of
stubbed timings is chosen per site, the cache is keyed by device, JAX version, dtype and shape,
a run records its choices in config.json, and a search with autotuning on runs."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas import autotune, configlib, ops, search, search_step, spaces, train
from dnas import workdir as workdir_lib


@pytest.fixture
def tuning_on(monkeypatch, tmp_path):
    """Autotuning on, with this test's own cache file."""
    monkeypatch.setenv(autotune.ENABLE_ENV, "1")
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / autotune.CACHE_FILE


def _tiny_config(**search):
    c = configlib.default_config()
    c.search.C, c.search.layers, c.search.batch_size = 4, 3, 16
    c.train.C, c.train.layers, c.train.batch_size = 4, 3, 16
    for k, v in search.items():
        c.search[k] = v
    return c


def _build_and_trace(config=None, dtype=jnp.float32):
    """(build(impl), trace(model)) of the default space's tiny supernet at batch 16, as
    `autotune.tuned` takes them."""
    c = config or _tiny_config()
    space = spaces.get(c.space)
    mix = {g: jnp.zeros(s) for g, s in space.alpha_shapes.items()}
    x = jax.ShapeDtypeStruct((16, 8, 8, 1), dtype)
    build = lambda impl: space.supernet(10, C=c.search.C, layers=c.search.layers, sep_impl=impl)
    return build, lambda model: model.init(jax.random.key(0), x, mix, train=True)


def _sites(config=None, dtype=jnp.float32):
    """The sites of the default space's tiny supernet at batch 16."""
    build, trace = _build_and_trace(config, dtype)
    return autotune.record_sites(lambda: trace(build(ops.AUTO)))


# Every form computes the same function (forward and gradients), in float64.


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("size,stride,padding", [(3, 1, 1), (3, 2, 1), (2, 2, 0)])
def test_pooling_forms_are_the_same_function(op, size, stride, padding):
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, 7, 8, 3), jnp.float64)
        pool = ops.max_pool if op == "max" else ops.avg_pool
        outs = {}
        for form in ops.IMPL_FORMS["pool"]:
            f = lambda x, form=form: pool(x, size, stride, padding, form)
            y = f(x)
            g = jax.grad(lambda x, f=f: jnp.sum(jnp.sin(f(x))))(x)
            outs[form] = (y, g)
        (y0, g0), (y1, g1) = outs.values()
        np.testing.assert_allclose(y0, y1, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g0, g1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_forms_are_the_same_function(stride):
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, 7, 8, 5), jnp.float64)
        dw = jax.random.normal(jax.random.key(1), (3, 3, 5), jnp.float64)
        per_channel = jnp.concatenate(
            [
                jax.lax.conv_general_dilated(
                    x[..., c : c + 1],
                    dw[:, :, c, None, None],
                    (stride, stride),
                    ((1, 1),) * 2,
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
                for c in range(5)
            ],
            -1,
        )
        grads = []
        for form in ops.IMPL_FORMS["depthwise"]:
            f = lambda x, dw, form=form: ops.depthwise_conv2d(x, dw, stride, 1, form)
            np.testing.assert_allclose(f(x, dw), per_channel, rtol=1e-12, atol=1e-12)
            grads.append(jax.grad(lambda *a, f=f: jnp.sum(jnp.cos(f(*a))), (0, 1))(x, dw))
        for a, b in zip(*grads, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_a_table_computes_what_each_forced_form_computes():
    """A supernet built with a table of mixed choices equals the one with the default forms."""
    config = _tiny_config()
    space = spaces.get(config.space)
    sites = _sites(config)
    forms = {s.kind: ops.IMPL_FORMS[s.kind] for s in sites}
    # Alternate the non-default forms over the sites.
    table = ops.ImplTable(
        tuple((s.key, forms[s.kind][1 + i % (len(forms[s.kind]) - 1)]) for i, s in enumerate(sites))
    )
    assert len({f for _, f in table.choices}) == 3  # depthwise, shifted and window all used
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    mix = {g: jax.nn.softmax(jax.random.normal(jax.random.key(1), s)) for g, s in
           space.alpha_shapes.items()}  # fmt: skip
    default = space.supernet(10, C=4, layers=3, sep_impl="fused")
    tuned = space.supernet(10, C=4, layers=3, sep_impl=table)
    params = jax.jit(default.init)(jax.random.key(2, impl="unsafe_rbg"), x, mix)
    with ops.recording_sites() as seen:
        y_tuned = jax.jit(lambda p: tuned.apply(p, x, mix, train=True))(params)
    y_default = jax.jit(lambda p: default.apply(p, x, mix, train=True))(params)
    np.testing.assert_allclose(y_tuned, y_default, atol=2e-5)
    assert {s.key for s in seen} == {s.key for s in sites}


# Choosing and caching.


def _stub(ms_by_form: dict[str, float], calls: list):
    def timer(site, form):
        calls.append((site.key, form))
        return ms_by_form[form]

    return timer


def test_the_fastest_of_stubbed_timings_is_chosen(tmp_path):
    sites = _sites()
    kinds = {s.kind for s in sites}
    assert kinds == {"separable", "pool"}
    calls = []
    ms = {"fused": 3.0, "depthwise": 1.0, "shifted": 2.0, "views": 5.0, "window": 4.0}
    table, record = autotune.choose(sites, timer=_stub(ms, calls), path=tmp_path / "c.json")
    assert len(calls) == sum(len(ops.IMPL_FORMS[s.kind]) for s in sites)
    expected = {"separable": "depthwise", "pool": "window"}
    assert table.as_dict() == {s.key: expected[s.kind] for s in sites}
    assert record["sites"] == table.as_dict() and record["measured"] == [s.key for s in sites]
    # A form that fails (inf) is never chosen, even when the others are slow.
    ms2 = ms | {"depthwise": math.inf}
    table, _ = autotune.choose(sites, timer=_stub(ms2, []), use_cache=False)
    assert {f for k, f in table.choices if k.startswith("separable")} == {"shifted"}
    with pytest.raises(RuntimeError, match=r"no form of .* ran.*sep_impl"):
        autotune.choose(sites, timer=lambda s, f: math.inf, use_cache=False)


def test_the_cache_is_keyed_by_device_jax_dtype_and_shape(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    sites = _sites()
    ms = {"fused": 1.0, "depthwise": 2.0, "shifted": 3.0, "views": 2.0, "window": 1.0}
    first, calls = autotune.choose(sites, timer=_stub(ms, []), path=path)[0], []
    # Same device, JAX, dtype and shapes: nothing is measured again, the choices come back.
    again, record = autotune.choose(sites, timer=_stub(ms, calls), path=path)
    assert calls == [] and record["measured"] == [] and again == first
    entries = json.loads(path.read_text())["entries"]
    device = autotune.device_key()
    assert device.startswith(jax.devices()[0].platform) and jax.__version__ in device
    assert all(k.startswith(device) for k in entries)
    # Another device kind or JAX version: measured again.
    monkeypatch.setattr(autotune, "device_key", lambda: "gpu:NVIDIA H100 jax 9.9")
    autotune.choose(sites, timer=_stub(ms, calls), path=path)
    assert len(calls) == sum(len(ops.IMPL_FORMS[s.kind]) for s in sites)
    monkeypatch.undo()
    # Another dtype: other keys (the table key names it); another batch: measured again,
    # with the same table key (a table tuned at one batch serves another).
    bf16 = _sites(dtype=jnp.bfloat16)
    assert all("bfloat16" in s.key for s in bf16)
    assert not {s.key for s in bf16} & {s.key for s in sites}
    halved = [s._replace(shape=(8, *s.shape[1:])) for s in sites]
    calls.clear()
    table, _ = autotune.choose(halved, timer=_stub(ms, calls), path=path)
    assert len(calls) == sum(len(ops.IMPL_FORMS[s.kind]) for s in sites)
    assert set(table.as_dict()) == {s.key for s in sites}
    # The key of a site: kind, arguments, per-image shape and dtype.
    key = ops.site_key("separable", (16, 8, 8, 4), jnp.float32, {"k": 3, "s": 1, "p": 1, "d": 1,
                                                                "out": 4})  # fmt: skip
    assert key == "separable[d=1,k=3,out=4,p=1,s=1] 8x8x4 float32"


def test_a_corrupt_cache_is_set_aside_and_measured_again(tmp_path, caplog):
    path = tmp_path / "c.json"
    path.write_text('{"version": 1, "entries": {"x": ')
    sites = _sites()[:2]
    ms = {"fused": 1.0, "depthwise": 2.0, "shifted": 3.0, "views": 2.0, "window": 1.0}
    calls = []
    autotune.choose(sites, timer=_stub(ms, calls), path=path)
    assert calls and "ignoring" in caplog.text
    assert path.with_name("c.json.corrupt").read_text().startswith('{"version": 1')
    assert set(json.loads(path.read_text())["entries"]) == {autotune.entry_key(s) for s in sites}


# In the runs.


def test_setup_tunes_by_measurement_and_a_second_setup_measures_nothing(tuning_on):
    config = _tiny_config()
    su = search_step.setup(config)
    record = su.autotune
    sites = _sites(config)
    assert set(record["sites"]) == {s.key for s in sites}
    assert sorted(record["measured"]) == sorted(s.key for s in sites)
    for key, form in record["sites"].items():  # the measured fastest, timed here
        ms = record["ms"][key]
        assert form in ms and ms[form] == min(t for t in ms.values() if t is not None)
    assert isinstance(su.model.sep_impl, ops.ImplTable)
    assert su.model.sep_impl.as_dict() == record["sites"]
    assert search_step.setup(config).autotune["measured"] == []  # from the cache file
    # Forced: no tuning, the form as asked.
    config.search.sep_impl = "shifted"
    su = search_step.setup(config)
    assert su.autotune == {} and su.model.sep_impl == "shifted"
    # The retraining network too (its sites: DARTS_V2's separable convolutions and pools).
    tu = train.setup(config, spaces.load("DARTS_V2"))
    assert tu.autotune["sites"] and isinstance(tu.model.sep_impl, ops.ImplTable)


def test_a_search_records_its_choices_in_config_json_and_resumes(tuning_on, tmp_path, monkeypatch):
    # Timings that favour the default forms: the step compiled is the other tests' (cached).
    defaults = {forms[0] for forms in ops.IMPL_FORMS.values()}
    monkeypatch.setattr(autotune, "time_site", lambda s, f: 1.0 if f in defaults else 2.0)
    config = _tiny_config(epochs=1, batch_size=128)
    config.space, config.search.C, config.search.layers = "nb201", 2, 1
    config.checkpoint_every_steps, config.progress = 100, False
    workdir = tmp_path / "run"
    search.run(config, str(workdir))
    saved = json.loads((workdir / "config.json").read_text())
    tuned = saved[workdir_lib.AUTOTUNE]["search"]
    assert tuned["device"] == autotune.device_key()
    assert tuned["sites"] and set(tuned["sites"].values()) == {"views"}  # NB201: its pools
    assert all(k.startswith("pool[") for k in tuned["sites"])
    # Resumed where the timings favour the other form and the cache is empty (another
    # machine): the run's own forms again, nothing measured.
    monkeypatch.setattr(autotune, "time_site", lambda s, f: 2.0 if f in defaults else 1.0)
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path / "elsewhere"))
    search.run(config, str(workdir))
    again = json.loads((workdir / "config.json").read_text())[workdir_lib.AUTOTUNE]["search"]
    assert again["sites"] == tuned["sites"] and not (tmp_path / "elsewhere").exists()
    # The record is not part of the config: the workdir's config loads, and resumes.
    loaded = configlib.load_json(str(workdir / "config.json"))
    assert loaded.search.sep_impl == "auto" and "autotune" not in loaded
    configlib.prepare_workdir(str(workdir), config)
    # Forcing another form on resume is allowed (the same function).
    config.search.sep_impl = "fused"
    configlib.prepare_workdir(str(workdir), config)


def test_a_resumed_run_takes_its_recorded_forms_again(tuning_on, monkeypatch):
    """`tuned(prior=...)`: the resumed run's forms, measuring nothing, with autotuning on or off;
    a prior made with autotuning off gives the defaults; a prior missing a site is chosen again;
    a forced form wins."""
    build, trace = _build_and_trace()
    sites = _sites()
    chosen = {s.key: ops.IMPL_FORMS[s.kind][-1] for s in sites}  # no kind's default
    prior = {"device": "gpu:NVIDIA H100 jax 9.9", "sites": chosen, "ms": {}}

    def unmeasured(site, form):
        raise AssertionError(f"measured {site.key}")

    for enabled in ("1", "0"):
        monkeypatch.setenv(autotune.ENABLE_ENV, enabled)
        model, record = autotune.tuned(build, trace, ops.AUTO, timer=unmeasured, prior=prior)
        assert model.sep_impl.as_dict() == chosen == record["sites"]
        assert record["device"] == prior["device"] and record["measured"] == []
    monkeypatch.setenv(autotune.ENABLE_ENV, "1")
    off = {"device": "cpu", "sites": {}, "disabled": autotune.ENABLE_ENV}
    model, record = autotune.tuned(build, trace, ops.AUTO, timer=unmeasured, prior=off)
    assert model.sep_impl == ops.ImplTable() and record == off
    # A prior without a valid form for some sites (another dnas version): those are chosen
    # again (measured; with autotuning off, the defaults), the others kept.
    first, second = sites[0], sites[1]
    partial = {"sites": {k: f for k, f in chosen.items() if k != first.key} | {second.key: "?"}}
    ms = {"fused": 3.0, "depthwise": 2.0, "shifted": 1.0, "views": 1.0, "window": 2.0}
    calls = []
    model, record = autotune.tuned(build, trace, ops.AUTO, timer=_stub(ms, calls), prior=partial)
    assert {k for k, _ in calls} == {first.key, second.key}
    fastest = {"separable": "shifted", "pool": "views"}
    want = chosen | {s.key: fastest[s.kind] for s in (first, second)}
    assert model.sep_impl.as_dict() == want == record["sites"]
    monkeypatch.setenv(autotune.ENABLE_ENV, "0")
    model, record = autotune.tuned(build, trace, ops.AUTO, timer=unmeasured, prior=partial)
    defaults = {s.key: ops.IMPL_FORMS[s.kind][0] for s in (first, second)}
    assert model.sep_impl.as_dict() == chosen | defaults
    monkeypatch.setenv(autotune.ENABLE_ENV, "1")
    model, record = autotune.tuned(build, trace, "shifted", timer=unmeasured, prior=prior)
    assert model.sep_impl == "shifted" and record == {}


def test_the_record_a_resume_reads_is_a_progressed_runs(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    record = {"device": "cpu", "sites": {"pool[k=3] 8x8x4 float32": "views"}}
    (workdir / "config.json").write_text(json.dumps({"seed": 0, "autotune": {"search": record}}))
    assert workdir_lib.recorded_autotune(str(workdir), "search") is None  # no step completed
    (workdir / "checkpoints" / "0").mkdir(parents=True)
    assert workdir_lib.recorded_autotune(str(workdir), "search") is None  # the seed's state
    (workdir / "checkpoints" / "3").mkdir()
    assert workdir_lib.recorded_autotune(str(workdir), "search") == record
    assert workdir_lib.recorded_autotune(str(workdir), "train") is None
    for bad in ('{"autotune": ', '{"autotune": {"search": {"sites": ["views"]}}}',
                '{"autotune": {"search": {"sites": {"k": 1}}}}'):  # fmt: skip
        (workdir / "config.json").write_text(bad)
        assert workdir_lib.recorded_autotune(str(workdir), "search") is None


def test_a_resume_keeps_the_record_in_config_json(tmp_path):
    """`prepare` rewrites config.json on every start; the autotuner's record of a run that has
    made progress stays (a process stopped before it records its choices again loses nothing);
    a run that has not is a new start, which chooses again."""
    config = _tiny_config()
    workdir = tmp_path / "run"
    configlib.prepare_workdir(str(workdir), config)
    record = {"device": "cpu", "sites": {"pool[k=3] 8x8x4 float32": "views"}}
    workdir_lib.record_autotune(str(workdir), "search", record)
    configlib.prepare_workdir(str(workdir), config)
    assert workdir_lib.AUTOTUNE not in json.loads((workdir / "config.json").read_text())
    workdir_lib.record_autotune(str(workdir), "search", record)
    (workdir / "checkpoints" / "3").mkdir(parents=True)
    configlib.prepare_workdir(str(workdir), config)
    assert workdir_lib.recorded_autotune(str(workdir), "search") == record


def _setup_kwargs_on_resume(monkeypatch, tmp_path, stage, module, run):
    """`module.setup`'s keyword arguments when `run(config, workdir)` resumes a run that made
    progress and recorded its forms at `stage` (setup stops it there)."""
    config = _tiny_config()
    config.sweep.seeds = "0-1"
    workdir = tmp_path / stage
    configlib.prepare_workdir(str(workdir), config, stage)
    record = {"device": "cpu", "sites": {"pool[k=3] 8x8x4 float32": "views"}}
    workdir_lib.record_autotune(str(workdir), "train" if stage == "train" else "search", record)
    (workdir / "checkpoints" / "3").mkdir(parents=True)

    class Built(Exception):
        pass

    def setup(*args, **kwargs):
        raise Built(kwargs)

    monkeypatch.setattr(module, "setup", setup)
    with pytest.raises(Built) as built:
        run(config, str(workdir))
    return built.value.args[0], record


def test_a_resumed_sweep_or_retraining_builds_with_its_record(tmp_path, monkeypatch):
    from dnas import sweep

    got, record = _setup_kwargs_on_resume(monkeypatch, tmp_path, "sweep", search_step, sweep.run)
    assert got == {"autotune_prior": record}
    retrain = lambda c, w: train.run(c, w, spaces.load("DARTS_V2"))
    got, record = _setup_kwargs_on_resume(monkeypatch, tmp_path, "train", train, retrain)
    assert got == {"autotune_prior": record, "splits": None, "teacher": None}  # no teacher


def test_autotune_off_gives_the_default_forms(monkeypatch):
    monkeypatch.setenv(autotune.ENABLE_ENV, "0")
    su = search_step.setup(_tiny_config())
    assert su.model.sep_impl == ops.ImplTable() and su.autotune["sites"] == {}
