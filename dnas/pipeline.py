"""The pipeline: how a method's phases compose, and `dnas run`.

`search_genotype(config, workdir)` (`dnas search`) runs a method's search: a staged method's stages
(P-DARTS, progressive DrNAS: `progressive.DRIVERS`), or one search loop (`search.run`) followed by
the selection phase named by `search.selection` (`SELECTIONS`: DARTS-PT, random search or
regularised evolution with the trained supernet). `run(config, workdir)` (`dnas run`) then
retrains the found cell and a random cell of the same space under the same budget, and
summarises (`<workdir>/summary.json`)."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from dnas import configlib, metrics, progressive, pt, search, selection, signals, spaces, train
from dnas import results as results_lib
from dnas import workdir as workdir_lib
from dnas.genotype import Genotype

# search.selection -> the phase that picks the genotype with the trained supernet after the search
# loop; "" keeps the strategy's own selection from the alphas.
SELECTIONS: dict[str, search.Select | None] = {
    "": None,
    "random": selection.select_with_supernet,
    "evolution": selection.select_with_supernet,
    "pt": pt.run,
}


def search_genotype(config: ml_collections.ConfigDict, workdir: str) -> Genotype:
    """The method's search in `config`, written to `workdir` (resumed where it stopped)."""
    configlib.validate(config)
    name = config.search.selection
    if name not in SELECTIONS:
        raise configlib.ConfigError(
            f"search.selection must be one of {tuple(SELECTIONS)}, got {name!r}"
        )
    staged = progressive.driver(config)
    if staged is not None:
        if config.search.sgas:
            raise configlib.ConfigError(
                f"strategy {config.strategy!r} runs in stages; SGAS decides within one search: "
                "set --config.search.sgas='' (or a strategy without stages)"
            )
        if name:
            raise configlib.ConfigError(
                f"strategy {config.strategy!r} runs in stages; a selection phase after them is "
                "not supported: set --config.search.selection=''"
            )
        return staged(config, workdir)
    return search.run(config, workdir, SELECTIONS[name])


@workdir_lib.exclusive
def run(
    config: ml_collections.ConfigDict, workdir: str, genotype: Genotype | None = None,
    retrain: bool = True,
) -> dict:  # fmt: skip
    """Searches, retrains (`dnas run`) and writes `summary.json`. Its times are the stages' own
    records, summed over every process that ran them (`loop.Clock`): `search_wall_s`, each
    retraining's `wall_s`, and `total_wall_s` their sum. A signal (`signals`) stops the run
    inside a stage's loop, or between stages here.

    A study's trials (`dnas.study`) also run the two halves alone: with `genotype`, that cell is
    retrained instead of a searched one (no search: `search_wall_s` 0); with `retrain=False`
    the search alone, summarised without `retrain`. With `benchmark.table`, `benchmark` holds
    the table's published results of the searched cell and of the seed's random cell (looked up,
    whether or not `baseline` retrains it)."""
    configlib.validate(config)
    workdir = os.path.abspath(workdir)
    space = spaces.get(config.space)
    table = space.ground_truth(config.benchmark.table) if config.benchmark.table else None
    found = search_genotype(config, workdir) if genotype is None else genotype
    random = space.random_genotype(np.random.default_rng(config.seed))
    runs: dict[str, Genotype] = {"searched": found}
    if config.baseline and retrain:
        runs["random"] = random
    results = {}
    for name, geno in (runs if retrain else {}).items():
        signals.check(f"before retraining the {name} cell", workdir)
        results[name] = train.run(config, os.path.join(workdir, f"retrain_{name}"), geno)
    search_s = search_wall_s(config, workdir) if genotype is None else 0.0
    summary = {
        "dataset": config.dataset,
        "space": config.space,
        "strategy": config.strategy if genotype is None else "",
        "order": config.order,
        "genotype": found.to_json(),
        "search_wall_s": round(search_s, 1),
        "total_wall_s": round(search_s + sum(r["wall_s"] for r in results.values()), 1),
    }
    if retrain:
        summary["retrain"] = results
    if table is not None:
        summary["benchmark"] = {"searched": table.lookup(found), "random": table.lookup(random)}
    text = json.dumps(summary, indent=2) + "\n"
    workdir_lib.atomic_write_text(os.path.join(workdir, results_lib.SUMMARY), text)
    return summary


def search_wall_s(config: ml_collections.ConfigDict, workdir: str) -> float:
    """The search's time, summed over every process that ran it, as it recorded it: the last
    `search/wall_s` of its `metrics.jsonl` (a staged search: of each stage's, added up)."""
    dirs = [workdir]
    if progressive.driver(config) is not None:
        stages = sorted(d for d in os.listdir(workdir) if d.startswith("stage_"))
        dirs = [os.path.join(workdir, d) for d in stages]
    total = 0.0
    for d in dirs:
        walls = [r["search/wall_s"] for r in metrics.read_metrics(d) if "search/wall_s" in r]
        total += walls[-1] if walls else 0.0  # none: a search that recorded no time
    return total


def format_summary(summary: dict) -> str:
    """A small table for the terminal (M MACs: millions of multiply-adds per image, what NAS
    papers call FLOPs), then the benchmark table's results of the cells, if any."""
    lines = [
        f"dataset {summary['dataset']}  space {summary['space']}  strategy "
        f"{summary['strategy']} ({summary['order']} order)  search {summary['search_wall_s']} s",
        f"{'cell':10} {'test acc':>9} {'params':>9} {'M MACs':>8} {'train s':>8}  genotype",
    ]
    retrained = summary.get("retrain", {})
    if any("test_perplexity" in r for r in retrained.values()):  # language models
        lines[1] = (f"{'cell':10} {'test ppl':>9} {'val ppl':>9} {'params':>9} {'M MACs/tok':>10} "
                    f"{'train s':>8}  genotype")  # fmt: skip
        for name, r in retrained.items():
            lines.append(
                f"{name:10} {r['test_perplexity']:9.2f} {r['val_perplexity']:9.2f} "
                f"{r['params']:>9,} {r['macs_per_token'] / 1e6:>10.3f} {r['train_wall_s']:>8}  "
                f"{r['genotype']}"
            )
    else:
        for name, r in retrained.items():
            macs = r["macs"] if "macs" in r else r["flops"]  # results.json before `macs`
            lines.append(
                f"{name:10} {100 * r['test_accuracy']:8.2f}% {r['params']:>9,} "
                f"{macs / 1e6:>8.2f} {r['train_wall_s']:>8}  {r['genotype']}"
            )
    if not retrained:
        lines[1:] = [f"genotype: {spaces.from_json(summary['genotype']).to_string()}"]
    for name, truth in summary.get("benchmark", {}).items():  # published results, percent
        shown = "  ".join(f"{column} {value:.2f}%" for column, value in truth.items())
        lines.append(f"{name:10} benchmark: {shown}")
    return "\n".join(lines)
