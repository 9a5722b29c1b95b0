"""The search loop's method options end to end on a tiny NAS-Bench-201 supernet (DARTS+ early
stopping, the Hessian diagnostic, supernet-based selection, DARTS-PT), and every config in
experiments/ with every variant its docstring names."""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dnas import configlib, ops, optim, pipeline, search, spaces, strategies

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**search_fields):
    c = configlib.default_config()
    c.space = "nb201"
    s = c.search
    s.C, s.layers, s.epochs, s.batch_size = 2, 1, 3, 128  # 4 steps per epoch
    for k, v in search_fields.items():
        s[k] = v
    c.checkpoint_every_steps, c.log_every_steps, c.progress = 100, 5, False
    return c


def _records(workdir):
    return [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_early_stop_hessian_and_evolution(tmp_path):
    config = tiny_config(
        early_stop="skip", early_stop_skips=0, hessian_every_epochs=1, hessian_iters=3,
        selection="evolution", selection_archs=8, selection_batches=1, evolution_population=4,
        evolution_sample_size=2, selection_rerank=2,
    )  # fmt: skip
    workdir = tmp_path / "run"
    geno = pipeline.search_genotype(config, str(workdir))
    stop = json.loads((workdir / "early_stop.json").read_text())
    assert stop["epoch"] == 1 and "skip connections" in stop["reason"]
    records = _records(workdir)
    epoch_ends = [r for r in records if "epoch" in r]  # stopped after the first of 3 epochs
    assert len(epoch_ends) == 1 and epoch_ends[0]["step"] == stop["step"]
    assert max(r["step"] for r in records) == stop["step"]
    assert "hessian/eigenvalue" in epoch_ends[0] and "skip_connections/normal" in epoch_ends[0]
    lines = [json.loads(x) for x in (workdir / "selection.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    # The two best distinct genotypes, re-scored on the whole validation split; the best kept.
    top, seen = [], set()
    for d in sorted(lines, key=lambda d: -d["val_accuracy"]):
        if d["genotype"] not in seen and len(top) < 2:
            seen.add(d["genotype"])
            top.append(d["genotype"])
    reranked = [
        json.loads(x) for x in (workdir / "selection_rerank.jsonl").read_text().splitlines()
    ]
    assert [d["genotype"] for d in reranked] == top
    best = max(reranked, key=lambda d: d["val_accuracy"])
    assert spaces.load(best["genotype"]) == geno
    # Resuming a stopped search does not go on.
    again = pipeline.search_genotype(config, str(workdir))
    assert again == geno
    assert len([r for r in _records(workdir) if "epoch" in r]) == 1


def test_darts_pt_selection(tmp_path):
    config = tiny_config(epochs=1, selection="pt", pt_interval=1, pt_eval_batches=1)
    workdir = tmp_path / "pt"
    geno = pipeline.search_genotype(config, str(workdir))
    decisions = [json.loads(x) for x in (workdir / "pt_decisions.jsonl").read_text().splitlines()]
    topology = spaces.get("nb201").topology
    labels = [f"{src}_{dst}" for src, dst in topology.edges]  # decisions name rows "src_dst"
    assert len(decisions) == topology.num_edges  # one op decision per edge, no topology phase
    assert [d["epoch"] for d in decisions] == list(range(topology.num_edges))  # every pt_interval
    assert all(d["cell"] == "normal" for d in decisions)
    assert sorted(d["edge"] for d in decisions) == sorted(labels)
    chosen = {d["edge"]: d["op"] for d in decisions}
    for dst, node in zip(topology.nodes, geno.normal, strict=True):
        for op, src in node:
            assert chosen[f"{src}_{dst}"] == op


@pytest.mark.parametrize("mode", ["rs", "adv"])
def test_darts_pt_holds_its_projection_in_the_perturbed_weight_step(mode):
    """SDARTS + DARTS-PT: the perturbation moves only undecided edges; a decided edge stays
    one-hot, a removed edge stays off (the attack's end-of-attack losses see projected weights)."""
    import jax
    import jax.numpy as jnp

    from dnas import pt

    space = spaces.get("nb201")
    ctx = strategies.Context(space=space, steps_per_epoch=2, epochs=2)
    args = {"mode": mode, "epsilon_start": 0.3, "epsilon_end": 0.3}
    strategy = pt.with_projection(strategies.build("sdarts", ctx, args))
    num_edges = space.topology.num_edges
    alphas = space.init_alphas(jax.random.key(0), 1.0)
    alphas |= {k: jnp.asarray(v) for k, v in pt.projection_init(space).items()}
    onehot = np.zeros((num_edges, space.num_ops), np.float32)
    onehot[0, 3] = 1
    alphas[f"{pt.FIXED}decided/normal"] = jnp.asarray(np.eye(num_edges)[0], jnp.float32)
    alphas[f"{pt.FIXED}onehot/normal"] = jnp.asarray(onehot)
    alphas[f"{pt.FIXED}edge_keep/normal"] = jnp.ones(num_edges).at[1].set(0.0)
    seen = []
    target = jax.random.normal(jax.random.key(1), onehot.shape)

    def loss_of_mix(m):  # rewards weight on the removed edge, if the attack could reach it
        seen.append(m["normal"])
        return jnp.sum(m["normal"] * target) + 10.0 * jnp.sum(m["normal"][1])

    mix = strategy.mix_weights(alphas, jax.random.key(2), 0)
    out = strategy.weight_mix(loss_of_mix, mix, jax.random.key(3), 0, alphas=alphas)
    out = np.asarray(out["normal"])
    np.testing.assert_array_equal(out[0], onehot[0])
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.abs(out[2:] - np.asarray(mix["normal"][2:])).max() > 0.01  # the rest is perturbed
    np.testing.assert_allclose(out[2:].sum(-1), 1.0, rtol=1e-5)
    if mode == "adv":  # the weights the attack's final comparison saw were projected
        assert seen and all(isinstance(m, jax.core.Tracer) or not m[1].any() for m in seen)


def _config_variants():
    """(path, arg) for every config file and every `:arg` its docstring shows."""
    out = []
    for path in sorted((ROOT / "experiments").glob("*/*.py")):
        if path.parent.name == "studies":  # dnas study files (tests/test_study.py)
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        args = set(re.findall(rf"{re.escape(path.name)}:(\w+)", doc))
        out += [(path, None)] + [(path, a) for a in sorted(args)]
    return out


def _id(value):
    return value if isinstance(value, str) else getattr(value, "parent", Path("")).name or "-"


@pytest.mark.parametrize("path,arg", _config_variants(), ids=_id)
def test_every_experiment_config_loads_and_builds_its_strategy(path, arg):
    spec = f"{path}:{arg}" if arg else str(path)
    c = configlib.load(spec)
    space = spaces.get(c.space)
    costs = lambda: {c: np.ones((1, *shape, 3)) for c, shape in space.alpha_shapes.items()}
    ctx = strategies.Context(
        space, c.order, optim.sgd(0.1), lambda step: 0.1, steps_per_epoch=10,
        epochs=c.search.epochs, edge_costs=costs,
    )  # fmt: skip
    if "search" in path.name:
        strategy = strategies.build(c.strategy, ctx, c.strategy_args.to_dict())
        assert isinstance(strategy, strategies.Strategy)
    assert c.search.selection in pipeline.SELECTIONS
    if arg and arg.endswith("smoke"):  # the embedded data: digits, or Python's text
        assert c.dataset == ("pydoc" if space.modality == "text" else "digits")


def test_every_method_has_a_smoke_variant():
    methods = {p.parent.name for p in (ROOT / "experiments").glob("*/*_search.py")}
    smoke = {p.parent.name for p, a in _config_variants() if a and a.endswith("smoke")}
    assert methods <= smoke, methods - smoke  # (other folders, e.g. distill/, may have some)


def test_pdarts_stages(tmp_path):
    # Two stages (the paper has three): every op, then the 3 of largest weight per edge, then
    # the best one. Each stage compiles its own supernet (its op set is part of the program).
    config = tiny_config(epochs=1)
    config.strategy = "pdarts"
    a = config.strategy_args
    a.stage_layers, a.keep, a.max_skips = (1, 1), (3, 1), 1
    a.dropout_rate = (0.1, 0.2)
    workdir = tmp_path / "pdarts"
    geno = pipeline.search_genotype(config, str(workdir))
    assert spaces.load_json(workdir / "genotype.json") == geno
    space = spaces.get("nb201")
    topology = space.topology
    masks = []
    for stage in range(2):
        stage_config = json.loads((workdir / f"stage_{stage}" / "config.json").read_text())
        masks.append(np.array(stage_config["strategy_args"]["ops_mask"]["normal"]))
        assert stage_config["strategy_args"]["skip_dropout"] == [0.1, 0.2][stage]
    assert not (workdir / "stage_2").exists()
    np.testing.assert_array_equal(masks[0], 1)  # stage 0 sees every op
    assert (masks[1].sum(-1) == 3).all()
    skip = space.op_index("skip_connect")
    for dst, node in zip(topology.nodes, geno.normal, strict=True):
        for op, src in node:  # the final ops come from the last stage's op set, never `none`...
            e = topology.edge_index(src, dst)
            if op == "none":  # ...unless the skip cap removed this edge's skip connection
                assert masks[1][e, skip] == 1
            else:
                assert masks[1][e, space.op_index(op)] == 1
    assert sum(op == "skip_connect" for node in geno.normal for op, _ in node) <= 1


def test_drnas_progressive_stages(tmp_path):
    """Two stages: partial channels 2 then 1, 5 ops then the 3 of largest stage-0 weight per
    edge; stage 1 starts from stage 0's alphas and goes on along one cosine learning rate."""
    config = tiny_config(epochs=1, lr=0.1, lr_min=0.0)
    config.strategy = "drnas"
    a = config.strategy_args
    a.progressive, a.stage_epochs, a.stage_partial_channels, a.keep = True, (2, 2), (2, 1), (3,)
    workdir = tmp_path / "drnas"
    geno = pipeline.search_genotype(config, str(workdir))
    assert spaces.load_json(workdir / "genotype.json") == geno
    space = spaces.get("nb201")
    topology = space.topology
    stages = [json.loads((workdir / f"stage_{i}" / "config.json").read_text()) for i in (0, 1)]
    assert [c["search"]["partial_channels"] for c in stages] == [2, 1]
    assert [c["search"]["lr_offset_epochs"] for c in stages] == [0, 2]
    assert all(c["search"]["lr_schedule_epochs"] == 4 for c in stages)
    np.testing.assert_array_equal(stages[0]["strategy_args"]["ops_mask"]["normal"], 1)
    with np.load(workdir / "stage_0" / "alphas.npz") as f:
        alpha0 = f["normal"]
    mask = np.array(stages[1]["strategy_args"]["ops_mask"]["normal"])
    top3 = np.argsort(-alpha0, axis=-1, kind="stable")[:, :3]
    want = np.zeros_like(mask)
    np.put_along_axis(want, top3, 1, axis=-1)
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_allclose(stages[1]["strategy_args"]["alphas_init"]["normal"], alpha0)
    for dst, node in zip(topology.nodes, geno.normal, strict=True):
        for op, src in node:  # the genotype's ops are among the last stage's
            assert mask[topology.edge_index(src, dst), space.op_index(op)] == 1
    # One cosine over both stages (4 steps per epoch): record `step` s logs the lr of step s - 1,
    # in epoch 2 + (s - 1) // 4 of the 4.
    logged = [(r["step"], r["lr"]) for r in _records(workdir / "stage_1") if "lr" in r]
    assert logged
    for s, lr in logged:
        want = 0.1 * 0.5 * (1 + np.cos(np.pi * (2 + (s - 1) // 4) / 4))
        np.testing.assert_allclose(lr, want, rtol=1e-5)


@pytest.mark.parametrize(
    "strategy,fields,args,message",
    [
        ("darts", {"single_op": True}, {}, "single_op=false"),
        ("random_ws", {}, {}, "selection=random"),
        ("darts", {"selection": "evolution", "evolution_sample_size": 30}, {},
         "evolution_population"),
        ("darts", {"early_stop": "soon"}, {}, "search.early_stop='soon' is not valid: one of"),
        ("drnas", {}, {"reg_scale": 1e-2}, "alpha_weight_decay instead of strategy_args.reg_scale"),
        ("darts", {"selection_rerank": 3}, {}, "selection_rerank=0"),
    ],
)  # fmt: skip
def test_meaningless_option_combinations_fail_before_the_search(
    strategy, fields, args, message, tmp_path
):
    config = tiny_config(**fields)
    config.strategy = strategy
    config.strategy_args.update(args)
    with pytest.raises(configlib.ConfigError, match=message):
        pipeline.search_genotype(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "checkpoints").exists()  # refused before the first step


def test_early_stop_when_the_ranking_is_stable(tmp_path):
    """With a zero alpha learning rate the ranking never changes: patience 1 stops the search at
    the end of epoch 2 (epochs 1 and 2 agree), not before."""
    config = tiny_config(early_stop="stable", early_stop_patience=1, alpha_lr=0.0)
    workdir = tmp_path / "stable"
    search.run(config, str(workdir))
    stop = json.loads((workdir / "early_stop.json").read_text())
    assert stop["epoch"] == 2 and "not changed for 1 epochs" in stop["reason"]
    # The rankings it compared, from the recorded weights: epochs 1 and 2 only, and equal.
    files = sorted(p.name for p in (workdir / "alpha_history").iterdir())
    assert files == ["epoch_0001.npz", "epoch_0002.npz"]
    space = spaces.get(config.space)
    learnable = [k for k, op in enumerate(space.ops) if op not in ("none", *ops.PARAMETER_FREE)]
    rankings = []
    for name in files:
        with np.load(workdir / "alpha_history" / name) as f:
            rankings.append(np.argsort(-f["normal"][:, learnable], -1))
    np.testing.assert_array_equal(rankings[0], rankings[1])


def test_progressive_searches_take_the_factory_defaults(tmp_path):
    """`--config.strategy=pdarts` alone means the paper's stages; a stage-less setting is
    refused before anything is written."""
    from dnas import progressive

    config = tiny_config()
    config.strategy = "pdarts"
    a = progressive.with_defaults(config).strategy_args
    assert (tuple(a.stage_layers), tuple(a.keep), a.max_skips) == ((5, 11, 17), (5, 3, 1), 2)
    config.strategy_args.max_skips = 1  # the config's own values win
    assert progressive.with_defaults(config).strategy_args.max_skips == 1
    config.strategy_args.keep, config.strategy_args.stage_layers = (), ()
    with pytest.raises(ValueError, match="at least one stage"):
        progressive.run_pdarts(config, str(tmp_path / "p"))
    config = tiny_config()
    config.strategy = "drnas"
    config.strategy_args.progressive, config.strategy_args.stage_epochs = True, ()
    with pytest.raises(ValueError, match="needs one stage_partial_channels"):
        progressive.run_drnas(config, str(tmp_path / "d"))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("path", sorted(ROOT.glob("experiments/*/cifar10_search.py")), ids=_id)
def test_digit_variants_leave_flipping_to_the_dataset(path):
    """A mirrored digit is another symbol: the digits and smoke variants of every method (and
    so the methods table) never force a flip; the CIFAR configs leave it to CIFAR's default."""
    for arg in ("digits", "smoke", ""):
        c = configlib.load(f"{path}:{arg}" if arg else str(path))
        assert c.search.flip is None and c.train.flip is None, arg
        assert c.dataset == "digits" if arg else "cifar" in c.dataset
