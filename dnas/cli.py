"""The `dnas` command line: parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _info(args: argparse.Namespace) -> int:
    import jax

    from dnas import data, evaluate, spaces

    info = data.get_info(args.dataset)
    out: dict = {"dataset": info.name, "input_shape": list(info.input_shape)}
    if args.supernet:
        space = spaces.get(args.supernet)
        kw = {"C": args.init_channels or 16}
        if args.layers:
            kw["layers"] = args.layers
        model = space.supernet(info.num_classes, **kw)
        mix = {k: jax.ShapeDtypeStruct(s, "float32") for k, s in space.alpha_shapes.items()}
        stats = evaluate.model_stats(model, info.input_shape, mix)
        out |= {"supernet": space.name, "network": type(model).__name__}
    else:
        geno = spaces.load(args.genotype)
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


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help=INFO_HELP[0], description=INFO_HELP[1])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--genotype",
        help="a published genotype name (e.g. darts_v2), a genotype string of any space (e.g. "
        "the DARTS or NAS-Bench-201 format), or a genotype JSON file",
    )
    what.add_argument("--supernet", help="a search space name (dnas.spaces.SPACES)")
    p.add_argument("--dataset", default="cifar10", help="sets classes and input shape")
    p.add_argument("--init-channels", type=int, help="C (default: the paper's setting)")
    p.add_argument("--layers", type=int, help="depth, as the space counts it (e.g. cells, or "
                   "cells per stage)")  # fmt: skip
    p.add_argument("--auxiliary", action="store_true", help="include the auxiliary head")
    p.set_defaults(func=_info)


def _default_workdir(command: str) -> str:
    import datetime

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{command}-{stamp}")


def _load_config(args: argparse.Namespace):
    from dnas import configlib

    config = configlib.load(args.config)
    return configlib.override(config, args.overrides)


def _stage(command: str, module: str, function: str, report: Callable[[Any, str], str]):
    """A stage command: loads the config, calls `dnas.<module>.<function>(config, workdir)`
    (imported only then: `--help` stays fast) and prints `report(result, workdir)`."""

    def func(args: argparse.Namespace) -> int:
        config = _load_config(args)
        workdir = args.workdir or _default_workdir(command)
        result = getattr(importlib.import_module(f"dnas.{module}"), function)(config, workdir)
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
        p.add_argument("--config", help="a config file, path/to/config.py[:arg]")
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
    from dnas import viz

    if len(args.workdirs) > 1 and not args.out:
        raise ValueError("several workdirs need --out DIR for their figures and the comparison")
    runs = [viz.load_run(w) for w in args.workdirs]
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # e.g. a/search b/search: name them by parent too
        names = [os.path.join(*os.path.normpath(r.workdir).split(os.sep)[-2:]).replace(os.sep, "_")
                 for r in runs]  # fmt: skip
    for run, name in zip(runs, names, strict=True):
        out = args.out if len(runs) == 1 and args.out else None
        out = out or (os.path.join(args.out, name) if args.out else
                      os.path.join(run.workdir, "figures"))  # fmt: skip
        written, notes = viz.save_all(run, out, args.format)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"{run.workdir}: {len(written)} figures in {os.path.abspath(out)}")
    if len(runs) > 1:
        groups: dict[str, list] = {}
        for run, name in zip(runs, names, strict=True):  # seeds share a name up to "-seed<N>"
            groups.setdefault(name.split("-seed")[0], []).append(run)
        path = os.path.join(args.out, f"compare.{args.format}")
        viz.save_figure(viz.compare_runs(groups), path)
        print(json.dumps(viz.summary_table(groups), indent=2))
        print(f"comparison: {os.path.abspath(path)}")
    return 0


def _plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help=PLOT_HELP[0], description=PLOT_HELP[1])
    p.add_argument("workdirs", nargs="+", help="workdirs of dnas search / train / run")
    p.add_argument("--out", help="output folder (default: <workdir>/figures)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"))
    p.set_defaults(func=_plot)


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
    "info": _info_parser,
    "plot": _plot_parser,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dnas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(sub)
    args, rest = parser.parse_known_args(argv)
    overrides = [a[len("--config.") :] for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown or (overrides and args.command in ("info", "plot")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or rest)}")
    args.overrides = overrides
    if getattr(args, "distributed", False) or getattr(args, "coordinator", None):
        import jax

        jax.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )
    try:
        return args.func(args)
    except (
        KeyError, ValueError, FileNotFoundError, FloatingPointError, RuntimeError, ImportError,
    ) as err:  # fmt: skip
        from dnas.checkpoint import CheckpointError

        if isinstance(err, RuntimeError) and not isinstance(err, CheckpointError):
            raise
        # KeyError's str() adds quotes around its message.
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"dnas {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
