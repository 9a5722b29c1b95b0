"""The `dnas` command line: parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _info(args: argparse.Namespace) -> int:
    import jax

    from dnas import data, evaluate, spaces

    space = spaces.get(args.supernet or args.space) if args.supernet or args.space else None
    geno = None if args.supernet else spaces.load(args.genotype, space=args.space)
    space = space or geno.search_space
    truth = None
    if args.benchmark:  # before the network is built: a wrong table or genotype fails at once
        if geno is None:
            raise ValueError("--benchmark gives a genotype's published results: use --genotype")
        if space.ground_truth is None:
            raise ValueError(f"search space {space.name!r} has no benchmark table "
                             "(Space.ground_truth): --benchmark is for NAS-Bench-201")  # fmt: skip
        truth = space.ground_truth(args.benchmark).lookup(geno)
    if space.modality == "text":
        return _info_text(args, space, geno)
    info = data.get_info(args.dataset)
    out: dict = {"dataset": info.name, "input_shape": list(info.input_shape)}
    if args.layers is not None and args.layers < space.min_layers:
        raise ValueError(
            f"--layers {args.layers} is out of range for search space {space.name!r}: an integer "
            f">= {space.min_layers} (the depth at which every cell type has a cell)"
        )
    if args.supernet:
        kw = {"C": 16 if args.init_channels is None else args.init_channels}
        if args.layers is not None:
            kw["layers"] = args.layers
        model = space.supernet(info.num_classes, **kw)
        mix = {k: jax.ShapeDtypeStruct(s, "float32") for k, s in space.alpha_shapes.items()}
        stats = evaluate.model_stats(model, info.input_shape, mix)
        out |= {"supernet": space.name, "network": type(model).__name__}
    else:
        model = geno.search_space.network(
            geno,
            info.num_classes,
            input_shape=info.input_shape,
            C=args.init_channels,
            layers=args.layers,
            auxiliary=args.auxiliary,
        )
        stats = evaluate.model_stats(model, info.input_shape)
        out |= {"genotype": geno.to_string(), "network": type(model).__name__}
    fields = model.__dataclass_fields__
    out |= {k: getattr(model, k) for k in ("C", "layers", "N", "auxiliary") if k in fields}
    out |= stats
    if truth is not None:  # the benchmark's published results of this architecture
        out["benchmark"] = truth | {"table": os.path.abspath(args.benchmark)}
    print(json.dumps(out, indent=2))
    return 0


def _info_text(args: argparse.Namespace, space, geno) -> int:
    """`dnas info` of a language model: parameters (the reference's count: the decoder tied to
    the embedding counts once) and multiply-adds per token."""
    import jax

    from dnas import lm

    if args.vocab_size is None:
        raise ValueError(f"{space.name} is a language model: give its vocabulary, --vocab-size N "
                         "(Penn Treebank: 10000)")  # fmt: skip
    size = args.size or args.init_channels
    kw = {k: v for k, v in (("C", size), ("layers", args.layers)) if v is not None}
    out: dict = {"space": space.name, "vocab_size": args.vocab_size, "seq_len": args.seq_len}
    if args.supernet:
        model = space.supernet(args.vocab_size, **kw)
        mix = {k: jax.numpy.zeros(s) for k, s in space.alpha_shapes.items()}
        model = lm.with_mix(model, mix)
        out["supernet"] = space.name
    else:
        model = space.network(geno, args.vocab_size, **kw)
        out["genotype"] = geno.to_string()
    out["network"] = type(getattr(model, "model", model)).__name__
    out |= lm.model_stats(model, args.seq_len)
    print(json.dumps(out, indent=2))
    return 0


INFO_HELP = (
    "parameters and multiply-adds of a network or a supernet, as JSON",
    "Counts parameters (`params` without the auxiliary head, as in the papers; `params_total` "
    "with it) and multiply-adds per image (`macs`, what NAS papers call FLOPs or mult-adds; "
    "`flops` is the same number under its old name) without materialising any weight.",
)
PLOT_HELP = (
    "write every figure of one or more runs (cells, alphas, curves, comparison)",
    "Cell diagrams of the genotype (graphviz's dot, else matplotlib), alpha heatmaps and lines "
    "per edge, the genotype over epochs, entropy and skip-connection diagnostics, search and "
    "retraining curves. Several workdirs: each run's figures in OUT/<run>/ and "
    "OUT/compare.<format> with mean +- std per group (runs named <group>-seed<N> form one group).",
)


def _positive_int(text: str) -> int:
    """argparse type of sizes: an integer >= 1 (argparse turns the error into one line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help=INFO_HELP[0], description=INFO_HELP[1])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--genotype",
        help="a published genotype name (e.g. darts_v2), a genotype string of any space (e.g. "
        "the DARTS or NAS-Bench-201 format), or a genotype JSON file",
    )
    what.add_argument("--supernet", help="a search space name (dnas.spaces.SPACES)")
    p.add_argument("--space", help="look the --genotype name up in this space first (its "
                   "published names may leave out the space's own name)")  # fmt: skip
    p.add_argument("--dataset", default="cifar10", help="sets classes and input shape")
    p.add_argument("--vocab-size", type=_positive_int, help="a language model's vocabulary")
    p.add_argument("--size", type=_positive_int, help="a language model's embedding and hidden "
                   "size (C; default: the paper's evaluation size)")  # fmt: skip
    p.add_argument("--seq-len", type=_positive_int, default=35, help="a language model's "
                   "sequence length for the multiply-adds per token (default 35)")  # fmt: skip
    p.add_argument("--init-channels", type=_positive_int, help="C (default: the paper's setting)")
    p.add_argument("--layers", type=_positive_int, help="depth, as the space counts it (e.g. "
                   "cells, or cells per stage)")  # fmt: skip
    p.add_argument("--auxiliary", action="store_true", help="include the auxiliary head")
    p.add_argument("--benchmark", metavar="FILE", help="the space's benchmark table (NAS-Bench-"
                   "201's: a CSV, scripts/nb201_to_csv.py): adds the --genotype's published "
                   "accuracies")  # fmt: skip
    p.set_defaults(func=_info)


def _default_workdir(command: str) -> str:
    import datetime

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{command}-{stamp}")


def _load_config(args: argparse.Namespace):
    """The config of `--config` with the `--config.KEY=VALUE` overrides, validated (before
    anything is imported for the stage, compiled or written)."""
    from dnas import configlib

    config = configlib.load(args.config)
    return configlib.validate(configlib.override(config, args.overrides))


CONFIG_HELP = "a config file, path/to/config.py[:arg], or a workdir's config.json (or the workdir)"
SHOW_CONFIG_HELP = (
    "print the effective config, a field a line with its documentation and valid values",
    "The config of --config (default: the embedded one) after the --config.KEY=VALUE overrides, "
    "validated as search, train, run and sweep validate it, one field a line: `key = value  # "
    "what it means (valid values)`, grouped as the config is. An invalid config is a one-line "
    "error.",
)


def _show_config(args: argparse.Namespace) -> int:
    from dnas import configlib

    print(configlib.explain(_load_config(args)))
    return 0


def _config_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help=SHOW_CONFIG_HELP[0], description=SHOW_CONFIG_HELP[1])
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_show_config)


def _stage(command: str, module: str, function: str, report: Callable[[Any, str], str]):
    """A stage command: loads the config, calls `dnas.<module>.<function>(config, workdir)`
    (imported only then: `--help` stays fast) and prints `report(result, workdir)`.

    SIGINT and SIGTERM stop it where its files are consistent (`signals.deferred`, installed
    before JAX is imported): one line on stderr says where the run stood and how to resume it,
    and the exit code is 128 + the signal (130, 143); a second signal exits at once."""

    def func(args: argparse.Namespace) -> int:
        from dnas import signals

        workdir = args.workdir or _default_workdir(command)

        def line(stopped: signals.Interrupted) -> str:
            resume = ["dnas", command, *(["--config", args.config] if args.config else [])]
            resume += [f"--config.{o}" for o in args.overrides]
            resume = shlex.join([*resume, "--workdir", os.path.abspath(workdir)])
            return f"dnas {command}: {stopped.describe(root=workdir)}; resume: {resume}"

        def exit_now(stopped: signals.Interrupted) -> None:
            # In the signal handler: os.write, since the handler may have interrupted a write to
            # sys.stderr (the progress bar), which print would re-enter.
            os.write(sys.stderr.fileno(), (line(stopped) + "\n").encode())
            os._exit(stopped.exit_code)  # no waiting for orbax's or TensorBoard's threads

        with signals.deferred(on_second=exit_now):
            try:
                config = _load_config(args)
                stage = getattr(importlib.import_module(f"dnas.{module}"), function)
                result = stage(config, workdir)
            except signals.Interrupted as stopped:
                print(line(stopped), file=sys.stderr, flush=True)
                return stopped.exit_code
        print(report(result, os.path.abspath(workdir)))
        return 0

    return func


def _summary_table(summary: dict, workdir: str) -> str:
    from dnas import pipeline

    return f"{pipeline.format_summary(summary)}\nworkdir: {workdir}"


_search = _stage(
    "search", "pipeline", "search_genotype",
    lambda g, workdir: f"genotype: {g.to_string()}\nworkdir:  {workdir}",
)  # fmt: skip
_train = _stage("train", "train", "run", lambda results, _: json.dumps(results, indent=2))
_sweep = _stage(
    "sweep", "sweep", "run",
    lambda genotypes, workdir: "\n".join(
        [*(f"m{i}: {g.to_string()}" for i, g in enumerate(genotypes)), f"workdir: {workdir}"]
    ),
)  # fmt: skip
_run = _stage("run", "pipeline", "run", _summary_table)


def _stage_parser(name: str, func, help_text: str):
    def add(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text}. Without --config: the embedded default (DARTS space, "
            "first order, 8x8 digits shipped with scikit-learn; no download). Any config field "
            "can be overridden with --config.FIELD=VALUE (e.g. --config.seed=3, "
            "--config.search.epochs=5).",
        )
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument("--workdir", help="output folder (default: a new folder under runs/); "
                       "an existing one is resumed")  # fmt: skip
        d = p.add_argument_group(
            "multi-host", "start the same command on every host; jax.distributed.initialize() "
            "runs first (TPU pods, SLURM and Open MPI are detected without these flags)"
        )  # fmt: skip
        d.add_argument("--distributed", action="store_true", help="initialise jax.distributed")
        d.add_argument("--coordinator", help="HOST:PORT of process 0 (implies --distributed)")
        d.add_argument("--num-processes", type=int)
        d.add_argument("--process-id", type=int)
        p.set_defaults(func=func)

    return add


def _plot(args: argparse.Namespace) -> int:
    """Exit 0 also when a workdir has nothing to plot yet (config.json only, or a search not past
    its first log): the workdir is valid and the run young, so a script polling a starting run
    does not fail; the line says that nothing was written and why, and no folder is made."""
    from dnas import viz

    fronts = [w for w in args.workdirs if os.path.isfile(os.path.join(w, viz.PARETO))]
    for root in fronts:  # a latency-target sweep (scripts/pareto.py): its Pareto front
        print(f"{root}: Pareto front in {viz.save_pareto(root, args.out, args.format)}")
    studies = [w for w in args.workdirs if os.path.isfile(os.path.join(w, "study.json"))]
    for root in studies:  # a study (dnas study): its table of the trials finished so far
        from dnas import study

        study.table(root)
        print(f"{root}: study figure in {viz.save_study(root, args.out, args.format)} "
              f"(table: {os.path.join(root, 'results.md')})")  # fmt: skip
    args.workdirs = [w for w in args.workdirs if w not in fronts and w not in studies]
    if not args.workdirs:
        return 0
    if len(args.workdirs) > 1 and not args.out:
        raise ValueError("several workdirs need --out DIR for their figures and the comparison")
    runs = [viz.load_run(w) for w in args.workdirs]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # e.g. a/search b/search: name them by parent too
        names = [os.path.join(*os.path.normpath(r.workdir).split(os.sep)[-2:]).replace(os.sep, "_")
                 for r in runs]  # fmt: skip
    plotted, said = [], set()
    for run, name in zip(runs, names, strict=True):
        out = args.out if len(runs) == 1 and args.out else None
        out = out or (os.path.join(args.out, name) if args.out else
                      os.path.join(run.workdir, "figures"))  # fmt: skip
        why = run.nothing_logged()
        if why is not None:
            print(f"{run.workdir}: nothing to plot yet: {why}; no figure written")
            continue
        written, notes = viz.save_all(run, out, args.format)
        for note in notes:
            if note not in said:  # e.g. the missing `dot`: once, not once per run
                said.add(note)
                print(f"note: {note}", file=sys.stderr)
        if written:
            print(f"{run.workdir}: {len(written)} figures in {os.path.abspath(out)}")
            plotted.append((run, name))
        else:
            print(f"{run.workdir}: nothing to plot yet: no figure has data (see the notes); "
                  "no figure written")  # fmt: skip
    if len(runs) > 1:
        if len(plotted) < len(runs):
            left = [r.name for r in runs if all(r is not p for p, _ in plotted)]
            print(f"note: left out of the comparison (nothing to plot yet): {', '.join(left)}",
                  file=sys.stderr)  # fmt: skip
        groups: dict[str, list] = {}
        for run, name in plotted:  # seeds share a name up to "-seed<N>"
            groups.setdefault(name.split("-seed")[0], []).append(run)
        if not groups:
            print("nothing to compare yet")
            return 0
        figure, table, rows = viz.save_comparison(groups, args.out, args.format)
        print(viz.format_table(rows))
        print(f"comparison: {figure} (table: {table})")
    return 0


def _plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help=PLOT_HELP[0], description=PLOT_HELP[1])
    p.add_argument(
        "workdirs",
        nargs="+",
        help="workdirs of dnas search / train / run, a study's folder (dnas study), or the "
        "root of a latency-target sweep (its pareto.json: scripts/pareto.py)",
    )
    p.add_argument("--out", help="output folder (default: <workdir>/figures)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    p.set_defaults(func=_plot)


def _version() -> str:
    """The installed package's version (its metadata), else `dnas.__version__` (a source tree
    on sys.path without installing)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("dnas")
    except importlib.metadata.PackageNotFoundError:
        import dnas

        return getattr(dnas, "__version__", "unknown")


def catalogue() -> dict[str, Any]:
    """What `dnas list` names, read from the registries: `spaces.SPACES` (ops, alpha shapes,
    protocols), `strategies.STRATEGIES` (the factory's first docstring phrase and its keyword
    arguments with their defaults), `data.DATASETS`, `pipeline.SELECTIONS` and the published
    genotypes of `spaces.known()` by space. Whether a tfds dataset is prepared is not checked."""
    import inspect

    from dnas import data, pipeline, spaces, strategies

    genotypes: dict[str, list[str]] = {}
    for name, genotype in spaces.known().items():
        genotypes.setdefault(genotype.space, []).append(name)
    out: dict[str, Any] = {"spaces": {}, "strategies": {}, "datasets": {}}
    for name, space in spaces.SPACES.items():
        out["spaces"][name] = {
            "ops": list(space.ops),
            "alpha_shapes": {g: list(shape) for g, shape in space.alpha_shapes.items()},
            "protocols": list(space.protocols),
            "genotypes": genotypes.get(name, []),
        }
    for name, factory in strategies.STRATEGIES.items():
        doc = (inspect.getdoc(factory) or "").split("\n")[0]
        args = {
            p.name: p.default
            for p in inspect.signature(factory).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY
        }
        out["strategies"][name] = {"description": doc.split(": ")[0], "args": args}
    for name, info in data.DATASETS.items():
        out["datasets"][name] = {
            "source": "embedded" if info.tfds_name is None else "tfds",
            "tfds_name": info.tfds_name,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
        }
    out["selections"] = list(pipeline.SELECTIONS)
    out["genotypes"] = genotypes
    return out


def _list_text(cat: dict[str, Any]) -> str:
    shape = lambda s: "x".join(map(str, s))
    lines = ["spaces (--config.space)"]
    width = max(map(len, cat["spaces"]), default=0)
    for name, sp in cat["spaces"].items():
        alphas = " + ".join(f"{g} {shape(s)}" for g, s in sp["alpha_shapes"].items())
        protocols = f", protocols: {', '.join(sp['protocols'])}" if sp["protocols"] else ""
        lines.append(f"  {name:{width}}  {len(sp['ops'])} ops, alphas {alphas}{protocols}")
        lines.append(f"  {'':{width}}  ops: {', '.join(sp['ops'])}")
    lines.append("strategies (--config.strategy, arguments: --config.strategy_args.NAME=VALUE)")
    width = max(map(len, cat["strategies"]), default=0)
    for name, st in cat["strategies"].items():
        args = " ".join(f"{k}={v!r}" for k, v in st["args"].items())
        lines.append(f"  {name:{width}}  {st['description']}" + (f"  [{args}]" if args else ""))
    lines.append("datasets (--config.dataset; tfds ones must be prepared first, see README)")
    width = max(map(len, cat["datasets"]), default=0)
    for name, d in cat["datasets"].items():
        source = "embedded, no download" if d["source"] == "embedded" else f"tfds {d['tfds_name']}"
        lines.append(f"  {name:{width}}  {shape(d['input_shape'])}, {d['num_classes']} classes"
                     f" ({source})")  # fmt: skip
    lines.append("selections (--config.search.selection)")
    lines.append("  " + ", ".join(s or repr(s) for s in cat["selections"])
                 + "  ('' keeps the strategy's own choice from the alphas)")  # fmt: skip
    lines.append("published genotypes (--config.train.genotype, dnas info --genotype)")
    for space, names in cat["genotypes"].items():
        lines.append(f"  {space}: {', '.join(names)}")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    cat = catalogue()
    print(json.dumps(cat, indent=2, default=str) if args.json else _list_text(cat))
    return 0


def _command(
    sub: argparse._SubParsersAction, name: str, func: Callable, text: str, details: str
) -> argparse.ArgumentParser:
    """A subcommand `name` running `func`: `text` is its one-line help, `text + details` its
    description."""
    p = sub.add_parser(name, help=text, description=f"{text}{details}")
    p.set_defaults(func=func)
    return p


def _list_parser(sub: argparse._SubParsersAction) -> None:
    text = "name the registered spaces, strategies, datasets, selections and published genotypes"
    p = _command(sub, "list", _list, text, " (read from the registries).")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _eval(args: argparse.Namespace) -> int:
    from dnas import train

    result = train.evaluate_trained(
        args.workdir, split=args.split, dataset=args.dataset, batch_size=args.batch_size
    )
    print(json.dumps(result, indent=2))
    return 0


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    text = "evaluate a trained network (its latest checkpoint) on a dataset split, as JSON"
    p = _command(sub, "eval", _eval, text, ": loss, accuracy, examples and the checkpoint's "
                 "step. WORKDIR is a dnas train workdir or a dnas run retraining folder "
                 "(<run>/retrain_searched).")  # fmt: skip
    p.add_argument("workdir", help="the training's workdir")
    p.add_argument("--split", default="test", choices=("test", "train", "val"))
    p.add_argument("--dataset", help="another registered dataset with the same input shape and "
                   "classes (default: the one trained on)")  # fmt: skip
    p.add_argument(
        "--batch-size", type=_positive_int, help="default: the training's train.batch_size"
    )


def _export(args: argparse.Namespace) -> int:
    from dnas import train

    model = train.export(args.workdir, args.out)
    print(f"exported {os.path.abspath(args.workdir)} (step {model['step']} of "
          f"{model['total_steps']}) to {model['out']}: {train.EXPORT_PARAMS}, genotype.json, "
          f"{train.EXPORT_MODEL}")  # fmt: skip
    print("rebuild it (import json, numpy as np, flax, dnas):")
    for line in model["rebuild"]:
        print(f"  {line}")
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    text = "write a trained network's parameters, genotype and model description"
    p = _command(sub, "export", _export, text, " for use without the workdir: params.npz "
                 "(parameters and BatchNorm statistics, flat '<collection>/<module>/.../<name>' "
                 "keys), genotype.json and model.json (space, genotype, C, layers, classes, input "
                 "shape and normalisation, dataset, and the three lines that rebuild the "
                 "network).")  # fmt: skip
    p.add_argument("workdir", help="a dnas train workdir or a dnas run retraining folder")
    p.add_argument("--out", help="output folder (default: WORKDIR/export)")


def _logits(args: argparse.Namespace) -> int:
    from dnas import train

    summary = train.write_logits(args.workdir, args.out, batch_size=args.batch_size)
    teacher = summary["teacher"]
    out, accuracy = summary["out"], 100 * summary["train_accuracy"]
    print(f"wrote the {teacher['kind']} teacher's logits of {summary['examples']} training "
          f"examples (train accuracy {accuracy:.2f}%) to {out}; distil from them with "
          f"--config.train.teacher={out}")  # fmt: skip
    return 0


def _logits_parser(sub: argparse._SubParsersAction) -> None:
    text = "write a teacher's logits of every training example, for distillation"
    p = _command(sub, "logits", _logits, text, " (train.teacher=FILE.npz): the teacher's "
                 "forward pass once, on the un-augmented images, instead of in every step. "
                 "WORKDIR is a dnas train workdir, a dnas run retraining folder or a dnas "
                 "search workdir (its supernet under the final mixing weights).")  # fmt: skip
    p.add_argument("workdir", help="the teacher's workdir")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="default: 256")


def _explain(args: argparse.Namespace) -> int:
    from dnas import explain

    result = explain.explain(
        args.workdir, out=args.out, split=args.split, batch_size=args.batch_size, fmt=args.format
    )
    for trained in result["trained"].values():
        where = trained["workdir"]
        print(f"{where}: {100 * trained['accuracy']:.2f}% {trained['split']} accuracy; "
              "accuracy drop (points) with each edge removed / its op replaced by the best "
              "parameter-free alternative:")  # fmt: skip
        for group, edges in trained["edges"].items():
            for e in edges:
                best = e["best_alternative"]
                swap = (f"{100 * e['best_alternative_drop']:6.2f} ({best})" if best
                        else "     - (no alternative)")  # fmt: skip
                print(f"  {group:7} {e['op']:14} {e['src']} -> {e['dst']}  "
                      f"{100 * e['removed_drop']:6.2f}  {swap}")  # fmt: skip
    found = result.get("search")
    if found is not None:
        how = "logged" if found["source"] == "logged" else "its last checkpoint's (none logged)"
        print(f"{found['workdir']}: op shares of {len(found['epochs'])} epoch(s), {how}")
    for skipped in result.get("skipped", []):
        print(f"{skipped['workdir']}: not explained: {skipped['reason']}")
    print(f"wrote {result['path']} and {len(result['figures'])} figures")
    return 0


def _explain_parser(sub: argparse._SubParsersAction) -> None:
    text = "explain a found cell: which edges and operations matter"
    p = _command(sub, "explain", _explain, text, ". For a trained network (a dnas train "
                 "workdir or a dnas run retraining folder): its accuracy drop when each edge "
                 "is removed from every cell of its type, and when its op is replaced by each "
                 "parameter-free op of the space (no training). For a search: each op's share "
                 "of its edge's output beside its mixing weight, per epoch logged "
                 "(search.explain_every_epochs; else the final epoch's). A dnas run workdir: "
                 "both. Writes explain.json and figures.")  # fmt: skip
    p.add_argument("workdir", help="a dnas train, search or run workdir")
    p.add_argument("--out", help="output folder (default: WORKDIR/explain)")
    p.add_argument("--split", default="test", choices=("test", "train", "val"))
    p.add_argument(
        "--batch-size", type=_positive_int, help="default: the training's train.batch_size"
    )
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))


LUT_HELP = (
    "time every candidate op of a space's supernet on this device: a latency table",
    " (JSON, dnas.hardware's format) for the hardware objectives (--config.hardware.lut) and "
    "`dnas latency`. The supernet is the config's search supernet (space, dataset input shape "
    "or a text space's text.bptt tokens, search.C, search.layers); each distinct op module is "
    "compiled and timed at inference (median and interquartile range of --runs calls), and the "
    "fixed part (stem, head, what the per-op sum misses) estimated on random networks.",
)
LATENCY_HELP = (
    "time discrete networks on this device against a latency table's prediction",
    ", one JSON line per network (genotype, predicted_ms, measured_ms, spread_ms) and a summary "
    "line (n, spearman, mape). The networks are built with the table's C, layers, input shape "
    "and batch; --fit fits measured ~ scale * predicted + offset on them and stores it in the "
    "table (its `correction`, which every later prediction applies).",
)


def _lut(args: argparse.Namespace) -> int:
    """Validates everything (config, space, dataset, candidates) before anything compiles."""
    args.overrides = [*args.overrides, *(f"{k}={v}" for k, v in (("space", args.space),
                      ("dataset", args.dataset)) if v is not None)]  # fmt: skip
    config = _load_config(args)
    from dnas import data, hardware, search, spaces

    space = spaces.get(config.space)
    if space.modality == "text":  # token sequences of text.bptt over the corpus' vocabulary
        inputs = f"{config.text.bptt}-token {config.dataset} sequences"
    else:
        inputs = f"{'x'.join(map(str, data.get_info(config.dataset).input_shape))} " \
            f"{config.dataset} inputs"  # fmt: skip
    if space.candidates is None:
        listing = [n for n, s in spaces.SPACES.items() if s.candidates is not None]
        raise ValueError(
            f"search space {space.name!r} does not list its candidate ops (Space.candidates), "
            f"so dnas cannot time them; spaces that do: {', '.join(listing) or 'none'}"
        )
    C, layers = config.search.C, config.search.layers
    print(f"timing the candidates of {space.name} (C={C}, layers={layers}) on {inputs}, batch "
          f"{args.batch}, {args.runs} runs after {args.warmup} warm-up calls each")  # fmt: skip
    table = search.config_table(
        config, batch=args.batch, runs=args.runs, warmup=args.warmup, dtype=args.dtype,
        fixed_samples=args.fixed_samples, log=print, verbose=args.verbose,
    )  # fmt: skip
    hardware.save_table(args.out, table, space.name, space.ops)
    meta = table.meta
    print(f"wrote {os.path.abspath(args.out)}: {meta['candidates']} entries "
          f"({meta['timed_modules']} distinct modules) on {meta['backend']} "
          f"({meta['device_kind']}), fixed part {table.fixed[0]:.3f} ms")  # fmt: skip
    return 0


def _lut_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "lut", _lut, *LUT_HELP)
    p.add_argument("--space", help="search space (default: the config's)")
    p.add_argument("--dataset", help="sets the input shape and classes (default: the config's)")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size timed (default 1)")
    p.add_argument("--runs", type=_positive_int, default=20, help="timed calls per op (20)")
    p.add_argument("--warmup", type=_positive_int, default=5, help="untimed calls first (5)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--fixed-samples", type=int, default=5, help="random networks timed to "
                   "estimate the fixed part (5; 0: fixed part 0)")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="a line per timed op")
    p.add_argument("--out", required=True, help="the table file to write (JSON)")


def _latency(args: argparse.Namespace) -> int:
    import numpy as np

    from dnas import data, hardware, latency, spaces

    space = spaces.get(args.space or hardware.table_space(args.lut))
    table = hardware.load_table(args.lut, space.ops, space.alpha_shapes, space=space.name)
    meta = table.meta
    needed = [k for k in ("C", "layers", "input_shape", "num_classes", "batch") if k not in meta]
    if needed or latency.RESOURCE not in table.resources:
        raise ValueError(
            f"{args.lut}: not a latency table of `dnas lut` (its meta has no "
            f"{', '.join(needed or [latency.RESOURCE])}); measure one with dnas lut"
        )
    batch = args.batch or meta["batch"]
    input_shape, num_classes = tuple(meta["input_shape"]), meta["num_classes"]
    mismatches = [] if batch == meta["batch"] else [f"batch {batch} (table: {meta['batch']})"]
    if args.dataset and args.dataset != meta.get("dataset"):
        info = data.get_info(args.dataset)
        input_shape, num_classes = tuple(info.input_shape), info.num_classes
        mismatches.append(f"dataset {args.dataset} (table: {meta.get('dataset')})")
    if mismatches and not args.allow_mismatch:
        raise ValueError(
            f"{args.lut} was measured at another setting: {', '.join(mismatches)}; "
            "--allow-mismatch times these networks anyway"
        )
    for m in mismatches:
        print(f"dnas latency: warning: {m}: the predictions are for the table's setting",
              file=sys.stderr)  # fmt: skip
    if args.genotype is not None:
        genotype = spaces.load(args.genotype)
        if genotype.space != space.name:
            raise ValueError(f"--genotype is a {genotype.space} genotype; --space is {space.name}")
        genotypes = [genotype]
    else:
        rng = np.random.default_rng(args.seed)
        genotypes = [space.random_genotype(rng) for _ in range(args.random)]
    runs = args.runs or meta.get("runs", 20)
    warmup = args.warmup or meta.get("warmup", 5)
    raw_table = hardware.uncorrected(table)
    predicted, raw, measured = [], [], []
    for genotype in genotypes:
        ms, spread = latency.time_network(
            space, genotype, num_classes=num_classes, input_shape=input_shape, C=meta["C"],
            layers=meta["layers"], batch=batch, runs=runs, warmup=warmup,
            dtype=meta.get("dtype", "float32"),
        )  # fmt: skip
        cost = latency.predict(space, table, genotype)
        predicted.append(cost[latency.RESOURCE])
        raw.append(latency.predict(space, raw_table, genotype)[latency.RESOURCE])
        measured.append(ms)
        line = {"genotype": space.to_string(genotype), "predicted_ms": cost[latency.RESOURCE],
                "measured_ms": ms, "spread_ms": spread}  # fmt: skip
        line |= {f"predicted_{r}": v for r, v in cost.items() if r != latency.RESOURCE}
        print(json.dumps(line), flush=True)
    summary = {
        "n": len(measured),
        "spearman": latency.rank_correlation(predicted, measured),
        "mape": latency.mape(predicted, measured),
    }
    if args.fit:
        fit = latency.fit_correction(raw, measured)
        corrected = table._replace(correction={**table.correction, latency.RESOURCE: fit})
        hardware.save_table(args.lut, corrected, space.name, space.ops)
        summary |= {k: fit[k] for k in ("scale", "offset", "mape_before", "mape_after")}
        summary["correction_saved"] = os.path.abspath(args.lut)
    print(json.dumps(summary))
    return 0


def _latency_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "latency", _latency, *LATENCY_HELP)
    p.add_argument("--space", help="the search space of the table (default: the one it names)")
    p.add_argument("--lut", required=True, help="a table written by dnas lut")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--genotype", help="a published genotype name, a genotype string or a "
                      "genotype JSON file")  # fmt: skip
    what.add_argument("--random", type=_positive_int, metavar="N", help="N random genotypes")
    p.add_argument("--seed", type=int, default=0, help="of the random genotypes (0)")
    p.add_argument("--dataset", help="default: the table's (another one needs --allow-mismatch)")
    p.add_argument("--batch", type=_positive_int, help="default: the table's (another one "
                   "needs --allow-mismatch)")  # fmt: skip
    p.add_argument("--allow-mismatch", action="store_true", help="time at another batch or "
                   "dataset than the table's, with a warning")  # fmt: skip
    p.add_argument("--runs", type=_positive_int, help="timed calls per network (the table's)")
    p.add_argument("--warmup", type=_positive_int, help="untimed calls first (the table's)")
    p.add_argument("--fit", action="store_true", help="fit and store the table's correction")


STUDY_HELP = (
    "run a study's trials (configs x grid x seeds) on Ray and tabulate them against random cells",
    "STUDY.py's get_study() returns a dnas.study.Study: groups (configs and overrides), seeds, "
    "a grid of overrides, what a trial runs (search + retrain, search alone scored by a benchmark "
    "table, or retraining given cells) and each trial's Ray resources. Each trial is a dnas run "
    "in DIR/<group>/seed<k>; running the study again skips finished trials and resumes the "
    "others from their checkpoints. Writes DIR/results.md, .csv and .json (mean +- std, 95% "
    "intervals, cost, the paired comparison with each seed's random cell); dnas plot DIR draws "
    "them. Without --address, a local Ray cluster.",
)


def _study(args: argparse.Namespace) -> int:
    from dnas import signals, study

    directory = args.dir or os.path.join(
        "runs", "study-" + os.path.splitext(os.path.basename(args.study))[0]
    )
    if args.table_only:
        rows, _, metric = study.table(directory)
        from dnas import results

        print(results.markdown(rows, metric), end="")
        return 0
    spec = study.load(args.study)
    if args.seeds is not None:
        from dnas import configlib

        spec = dataclasses.replace(spec, seeds=configlib.parse_seeds(args.seeds))
    resume = ["dnas", "study", args.study, "--dir", os.path.abspath(directory)]
    resume += [*(["--seeds", args.seeds] if args.seeds else []),
               *(["--address", args.address] if args.address else [])]  # fmt: skip
    resume = shlex.join(resume)
    with signals.deferred():
        try:
            failed = study.run(
                spec, directory, source=args.study, address=args.address,
                max_concurrent=args.max_concurrent, report_every_s=args.report_every,
            )  # fmt: skip
        except signals.Interrupted as stopped:
            print(f"dnas study: stopped by {stopped.signal_name}; each running trial stopped at "
                  f"its next step, checkpointed (its log in DIR/logs says where); resume: "
                  f"{resume}", file=sys.stderr)  # fmt: skip
            return stopped.exit_code
    if failed:
        print(f"dnas study: {failed} trial(s) failed (their logs above); after fixing the cause, "
              f"run again to retry them: {resume}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _study_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help=STUDY_HELP[0], description=STUDY_HELP[1])
    p.add_argument("study", help="a study file (Python with get_study())")
    p.add_argument("--dir", help="the study's folder (default: runs/study-<file name>); an "
                   "existing one is resumed")  # fmt: skip
    p.add_argument("--address", help="a running Ray cluster to join (HOST:PORT, or auto); "
                   "default: start a local one")  # fmt: skip
    p.add_argument("--max-concurrent", type=_positive_int, help="trials at a time (default: as "
                   "many as the cluster's resources allow)")  # fmt: skip
    p.add_argument("--seeds", help="these seeds instead of the study's, e.g. 0-4 or 0,2")
    p.add_argument("--report-every", type=float, default=60.0, metavar="SECONDS",
                   help="print the running trials' progress this often")  # fmt: skip
    p.add_argument("--table-only", action="store_true", help="only tabulate the finished trials")
    p.set_defaults(func=_study)


COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "run": _stage_parser("run", _run, "search, retrain the found and a random cell, summarise"),
    "search": _stage_parser("search", _search, "search a cell, write its genotype"),
    "train": _stage_parser("train", _train, "train a genotype from scratch and test it"),
    "sweep": _stage_parser(
        "sweep",
        _sweep,
        "search with many seeds (x values of --config.sweep.param) as one "
        "vmapped program; members listed by --config.sweep.seeds=0-7",
    ),
    "config": _config_parser,
    "info": _info_parser,
    "plot": _plot_parser,
    "list": _list_parser,
    "eval": _eval_parser,
    "export": _export_parser,
    "logits": _logits_parser,
    "explain": _explain_parser,
    "lut": _lut_parser,
    "latency": _latency_parser,
    "study": _study_parser,
}


# OS errors that mean a file could not be written (others: "cannot access").
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dnas", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dnas {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(sub)
    args, rest = parser.parse_known_args(argv)
    overrides = [a[len("--config.") :] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown or (overrides and not hasattr(args, "config")):  # only config commands take them
        parser.error(f"unrecognized arguments: {' '.join(unknown or rest)}")
    args.overrides = overrides
    if getattr(args, "distributed", False) or getattr(args, "coordinator", None):
        import jax

        jax.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    try:
        return args.func(args)
    except KeyboardInterrupt:  # the commands that are not stages (plot, info, eval, ...)
        print(f"dnas {args.command}: interrupted by SIGINT", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `dnas list | head`: the reader has gone; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit either
        return 1
    except (
        KeyError, ValueError, OSError, FloatingPointError, RuntimeError, ImportError,
    ) as err:  # fmt: skip
        from dnas.checkpoint import CheckpointError
        from dnas.errors import WorkdirLocked

        if isinstance(err, RuntimeError) and not isinstance(err, CheckpointError | WorkdirLocked):
            raise
        # KeyError's str() adds quotes around its message.
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            # A read-only workdir, a full disk, no permission: the file and the cause. A failed
            # write() names no file; then the workdir, when given (a closed pipe is not it).
            workdir = None if isinstance(err, ConnectionError) else getattr(args, "workdir", None)
            where = err.filename or workdir
            if where is not None and err.strerror:
                verb = "write" if err.errno in _WRITE_ERRNOS else "access"
                message = f"cannot {verb} {os.fspath(where)}: {err.strerror}"
        print(f"dnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
