"""`madmine demo`: the whole method, end to end, on the synthetic world, measured.

No pretrained weights or web corpora can be downloaded here, and a user wants to see the
method work before pointing it at a cluster. The synthetic world has exact ground truth, so
every step runs for real (ingest, score on local Ray, bounds, select, rate through the
rating storage, S, annotate export and import, finetune as a Ray Train job, testset,
evaluate, report) with simulated raters and an annotator, and the demo can measure what
the paper measured: Table 1 (every model on every test set), Table 2 (the target
fine-tuned on MAD's S against entropy and random picks of the same size), and how many of
MAD's picks are failures compared with random ones.

Rounds run through `madmine round` (madmine.pipeline.round.Round); at its waiting points the
simulated people act. Everything lands under `workdir`; a second run reuses the world,
the trained models and every finished step.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from madmine import tables
from madmine.completion import finetune_markers
from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.pipeline.round import Round
from madmine.ray_cluster import ensure_ray
from madmine.steps import bounds, ingest
from madmine.steps.context import StepContext
from madmine.steps.evaluation import run as evaluation
from madmine.steps.evaluation import selectors
from madmine.steps.learned import load as load_learned
from madmine.steps.report import ReportParams
from madmine.steps.report import run as report
from madmine.steps.train.versions import with_latest_target
from madmine_demo import measure, printout, strategies
from madmine_demo import settings as demo_settings
from madmine_demo.arena import run_arena
from madmine_demo.people.annotator import label_and_import
from madmine_demo.people.raters import rate_round
from madmine_demo.world.datasets import write
from madmine_demo.world.failures import KINDS, MIXES
from madmine_demo.world.shapes import NAMES
from madmine_demo.world.truth import Truth
from madmine_demo.zoo.training import ensure_trained

WORLD_VERSION = 1  # part of the trained models' cache key: bump when the world's drawing changes


@dataclass
class Clock:
    """Times the demo's steps and prints each as it ends."""

    console: Console
    rows: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def step(self, name: str):
        self.console.print(f"[bold cyan]>[/] {name} ...", highlight=False)
        t = time.perf_counter()
        yield
        self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.rows.append((name, seconds))
        self.console.print(f"[green]done[/] {name} in {seconds:.1f} s", highlight=False)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class DemoResult:
    workdir: Path
    timings: list[tuple[str, float]]
    seconds: float
    yields: dict  # round -> list of measure.Yield
    table1: list[dict]  # evaluation summary rows
    arena: object  # arena.ArenaResult
    reports: list[str]
    probe: object = None  # arena.ArenaResult on the probe (failure rates per kind)
    t0: object = None  # arena.ArenaResult on T(0) held-out
    learned: object = None  # madmine.steps.learned.Trained: round 1's failure predictor and its AUROC
    spread: dict = field(default_factory=dict)  # variant -> measure.Spread over the training seeds
    selectors: dict = field(default_factory=dict)  # round -> selectors.Judged: every selector over the whole corpus
    fits: dict = field(default_factory=dict)  # variant -> its fine-tuning's result (FinetuneResult fields)
    findings: list = field(default_factory=list)  # the run's findings as sentences, from its own tables
    repair: dict = field(default_factory=dict)  # variant -> kind -> metrics.Repair against its parent on the probe


def _world(workdir: Path, settings, clock: Clock):
    """The world's datasets; a workdir holds one world (its workspace has ingested that corpus)."""
    marker = workdir / "world.json"
    chosen = {"world": settings.world, "seed": settings.seed}
    held = json.loads(marker.read_text()) if marker.exists() else chosen
    if held != chosen:
        raise MadmineError(f"{workdir} holds the demo of the {held['world']!r} world (seed {held['seed']}); "
                           f"remove it or pick another --workdir for the {settings.world!r} world")
    marker.write_text(json.dumps(chosen))
    root = workdir / "world"
    with clock.step(f"world ({settings.world}): {settings.train} training, {settings.t0} T(0), {settings.corpus} wild, "
                     f"{settings.heldout} held-out wild, {settings.probe_per_kind} probe images of each kind"):
        sets = {name: write(root, name, size, settings.seed, domain)
                for name, size, domain in (("train", settings.train, "train"), ("t0", settings.t0, "train"),
                                           ("wild", settings.corpus, settings.world),
                                           ("heldout", settings.heldout, settings.world),
                                           ("probe", settings.probe_per_kind * len(KINDS), "probe"))}
    return sets


def zoo_key(settings) -> str:
    """What the trained models depend on besides their own settings: the training set."""
    return f"{settings.seed}:{settings.train}:{WORLD_VERSION}"


def _models(workdir: Path, settings, sets, clock: Clock) -> tuple[list, dict[str, str]]:

    models = demo_settings.zoo(settings)
    with clock.step("models: " + ", ".join(f"{m.name} ({m.factory.split(':')[1]})" for m in models)):
        paths = ensure_trained(models, sets["train"].images, sets["train"].labels, workdir / "workspace" / "zoo",
                               len(NAMES), zoo_key(settings),
                               report=lambda text: clock.console.print(text, highlight=False))
    return models, {name: os.path.relpath(p, workdir) for name, p in paths.items()}


def _run_round(config, ws, round_: int, truth, clock: Clock, ray_address, config_path: Path, on_rate=None):
    """Round R through madmine.pipeline.round.Round; the simulated people act at its waiting points."""
    cfg = with_latest_target(config, ws)  # round R troubleshoots the newest target version
    rnd = Round(cfg, round_, ray_address=ray_address, config_path=str(config_path), export_format="coco",
                say=lambda text: clock.console.print(f"  {text}", highlight=False, soft_wrap=True, markup=False))

    def tell(step: str, text: str) -> None:
        if text.startswith("done in"):
            seconds = rnd.record["steps"][step].get("seconds", 0.0)
            clock.add(f"round {round_}: {step}", seconds)

    while True:
        waiting = rnd.run(until="test_labels", on_step=tell)
        if waiting is None:
            return rnd
        if waiting.step == "rate":
            if on_rate is not None:
                on_rate(rnd.record["run_id"])
            with clock.step(f"round {round_}: 3 simulated raters vote (rating storage)"):
                rate_round(ws, cfg, truth, round_)
        elif waiting.step in ("annotate", "test_labels"):
            which = "s" if waiting.step == "annotate" else "test"
            folder = Path(ws.path("exports", f"round-{round_}-{which}-coco"))
            with clock.step(f"round {round_}: simulated annotator labels the {which!r} export, annotate import"):
                label_and_import(ws, cfg, folder, truth)
        else:
            raise RuntimeError(f"round {round_} waits at {waiting.step!r}: {waiting.what}")


def run_demo(workdir: Path, images: int | None = None, *, rounds: int | None = None, quick: bool = False,
             ray_address: str | None = None, console: Console | None = None, world: str | None = None,
             choose_by: str | None = None, seeds: int | None = None) -> DemoResult:
    """Run the demo in `workdir`: `images` wild images (default 5,000), `rounds` rounds (default 2);
    `quick` is the small end-to-end version (a few hundred images, tiny schedules);
    `world` the corpus's mix of kinds ('web' or 'wild', failures.MIXES); `choose_by` how
    fine-tuning picks its learning rate ('validation' or the paper's 't0'); `seeds` how many
    training seeds each compared fine-tuning runs with (1: Table 2 alone; 3: its spread too)."""

    console = console or Console(width=None if Console().is_terminal else 132)
    settings = (demo_settings.QUICK if quick else demo_settings.FULL).with_corpus(images)
    if rounds is not None:
        settings = replace(settings, rounds=rounds)
    if world is not None:
        if world not in MIXES:
            raise MadmineError(f"unknown world {world!r}: one of {', '.join(MIXES)}")
        settings = replace(settings, world=world)
    if choose_by is not None:
        if choose_by not in ("t0", "validation"):
            raise MadmineError(f"unknown choose_by {choose_by!r}: 't0' or 'validation'")
        settings = replace(settings, choose_by=choose_by)
    if seeds is not None:
        if not 1 <= seeds <= 10:
            raise MadmineError(f"seeds must be within [1, 10], got {seeds}")
        settings = replace(settings, seeds=seeds)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    clock = Clock(console)

    sets = _world(workdir, settings, clock)
    zoo_models, weights = _models(workdir, settings, sets, clock)
    config_path = workdir / "madmine.toml"
    config_path.write_text(demo_settings.config_text(settings, "workspace/", weights, Path("world"), zoo_models))
    config = load_config(config_path)
    ctx = StepContext.of(config, ray_address=ray_address)
    ws = ctx.ws

    with clock.step("ray: " + (f"connect to {ray_address}" if ray_address else "start the embedded local cluster")):
        ensure_ray(ray_address)
    with clock.step("ingest the wild corpus"):
        ingested = ingest.run(ctx, ingest.IngestParams.from_config(config, [str(sets["wild"].images)]))
        if ingested.failure:
            raise MadmineError(ingested.failure)
    truth = Truth([sets["wild"], sets["heldout"], sets["probe"], sets["t0"]], len(NAMES))
    truth.add_manifest(ws)
    with clock.step("bounds from the labels of S(0)"):
        bounds.run(ctx, bounds.BoundsParams(str(sets["train"].labels)))

    picked: dict[int, list[str]] = {}
    predictors: dict[int, object] = {}

    def pick_strategies(r: int):
        def hook(run_id: str) -> None:  # before the round's ratings: every strategy sees the corpus MAD's M saw
            with clock.step(f"round {r}: {', '.join(strategies.compared(r))} select with MAD's budget"):
                picked[r] = []
                for strategy in strategies.compared(r):
                    try:
                        result = strategies.pick(ctx, r, strategy, run_id).result
                    except MadmineError as exc:  # the learned ones without enough ratings: named, the demo goes on
                        console.print(f"[yellow]{strategy} skipped in round {r}:[/] {exc}", highlight=False)
                        continue
                    picked[r].append(strategy)
                    if result.trained is not None:
                        predictors[r] = result.trained
            if r in predictors:
                console.print(f"round {r} failure predictor: " + predictors[r].describe(), highlight=False)
        return hook

    yields, runs, fits, judged = {}, {}, {}, {}
    for r in range(settings.rounds):
        rnd = _run_round(config, ws, r, truth, clock, ray_address, config_path, pick_strategies(r))
        runs[r] = ws.get_json(ws.path("runs", rnd.record["run_id"], "run.json"))
        fits[f"mad_r{r}"] = finetune_markers(ws, f"round-{r}-{tables.MAD}").get("done")["result"]
        if r not in picked:  # a resumed demo: the strategies that selected in the earlier run
            picked[r] = [s for s in strategies.compared(r) if tables.CANDIDATES.exists(ws, round=r, strategy=s)]
        if r not in predictors and (trained := load_learned(ws, r)) is not None:
            predictors[r] = trained
        for strategy in picked[r]:
            with clock.step(f"round {r}: {strategy}: its S of {settings.n4} (rate select), labels, fine-tuning (Ray Train)"):
                strategies.label_s(ctx, r, strategy, truth, Path(ws.path("exports", f"round-{r}-{strategy}-s-coco")))
                fits[f"{strategy}_r{r}"] = dict(strategies.finetune(ctx, r, strategy).__dict__)
        with clock.step(f"round {r}: failure yields, and every selector judged over the corpus"):
            yields[r], ious = measure.round_yields(ws, truth, r, settings.seed)
            judged[r] = selectors.run(ctx, selectors.SelectorsParams(r), outcomes=measure.outcomes(ious, truth))
        printout.yields(console, r, yields[r])
        printout.selectors(console, judged[r])
        printout.failure_rates(console, r, measure.failure_rates_by_kind(ious, truth))

    variants = {name: fit["weights_uri"] for name, fit in fits.items()}
    for seed in range(1, settings.seeds):  # the same fine-tunings with other training seeds (replicates), MAD's too
        for name in [n for n in fits if not measure.is_seed_variant(n)]:
            strategy, _, r = name.rpartition("_r")
            with clock.step(f"seed {seed}: fine-tune {strategy}'s S of round {r} again (finetune --seed, Ray Train)"):
                result = strategies.finetune(ctx, int(r), strategy, seed=settings.seed + seed)
            variants[measure.seed_variant(name, seed)] = result.weights_uri
            fits[measure.seed_variant(name, seed)] = dict(result.__dict__)

    with clock.step("evaluate: every model on T(0) held-out and every T(R); selection quality"):
        evaluated = evaluation.run(ctx, evaluation.EvaluateParams())
    reports = []
    with clock.step("report: one HTML page per round"):
        for r in range(settings.rounds):
            reports.append(report(ctx, ReportParams(r)))

    arena_models = {k: variants[k] for k in sorted(variants, key=lambda k: (measure.is_seed_variant(k),
                                                                         not k.startswith("mad"), k))}
    labels = {"target": "original target",  # Table 2: the seed-0 runs
              **{k: _variant_label(k, settings.n4) for k in arena_models if not measure.is_seed_variant(k)}}
    pairs = [("mad_r0", "target")] + [(f"mad_r{r}", f"{s}_r{r}") for r in range(settings.rounds)
                                      for s in strategies.compared(r)]
    pairs = [(a, b) for a, b in pairs if a in arena_models and (b in arena_models or b == "target")]
    arenas = {}  # the held-out wild set (competitions: Table 2); the probe (failure rates per kind); T(0) held-out
    for name, folder, what, competitions in (
        ("heldout", "arena", f"{settings.heldout} held-out wild images; {len(pairs)} MAD competitions", pairs),
        ("probe", "arena-probe", f"the {len(sets['probe'].kinds())} probe images", []),
        ("t0", "arena-t0", f"the {len(sets['t0'].kinds())} T(0) held-out images", []),
    ):
        with clock.step(f"arena: the targets on {what}"):
            root = workdir / folder
            text = demo_settings.config_text(
                settings, "workspace/", {m.name: os.path.relpath(workdir / weights[m.name], root) for m in zoo_models},
                Path(os.path.relpath(workdir / "world", root)), zoo_models[:1], extra_models=arena_models,
                t0=(str(sets[name].images) + "/", str(sets[name].labels) + "/"),
            )
            arenas[name] = run_arena(root, text, sets[name], truth, competitions, s0_labels=sets["train"].labels)

    summary = evaluated.evaluation.summary_table().to_pylist()
    printout.table1(console, summary)
    printout.table2(console, arenas["heldout"], labels)
    printout.failures_by_kind(console, arenas["probe"], arenas["t0"], labels)
    shown = {k: fits[k] for k in sorted(fits, key=lambda k: (not k.startswith("mad"), k)) if k in labels}
    printout.fit(console, shown, labels)
    repairs = measure.repair_by_kind(arenas["probe"], [k for k in arena_models if not measure.is_seed_variant(k)])
    printout.repair_by_kind(console, arenas["probe"], repairs, labels)
    s_kinds = next((y.kinds for y in yields.get(0, []) if y.name.startswith("S:")), None)
    main_kind = s_kinds.most_common(1)[0][0] if s_kinds else ""  # the kind round 0's S holds most
    held = {r: {k for y in (yields.get(q, []) for q in range(r + 1)) for row in y if row.name.startswith("S:")
                for k, n in row.kinds.items() if n} for r in yields}
    absent = {r: set(KINDS) - kinds for r, kinds in held.items()}  # kinds no S of MAD's rounds <= R holds
    spread = measure.seed_spread(arenas["heldout"], arenas["probe"], arenas["t0"], settings.seeds, main_kind, fits,
                                 absent)
    if settings.seeds > 1:
        printout.seed_spread(console, spread, labels, settings.seeds)
    for r in range(settings.rounds):
        printout.yields(console, r, yields[r])
        printout.selectors(console, judged[r])
    for r, trained in sorted(predictors.items()):
        console.print(f"round {r} failure predictor: " + trained.describe(), highlight=False)
    result = DemoResult(workdir, clock.rows, clock.total, yields, summary, arenas["heldout"], reports, arenas["probe"],
                        arenas["t0"], predictors.get(1), spread, judged, fits, repair=repairs)
    result.findings = printout.findings(result, labels)
    console.print("\n[bold]What this run found[/] (every figure from the tables above):")
    for sentence in result.findings:
        console.print(f"- {sentence}", highlight=False, soft_wrap=True)
    printout.timings(console, clock.rows, clock.total)
    console.print("reports: " + ", ".join(reports), highlight=False)
    console.print(f"ask the tables anything: madmine --config {config_path} sql \"SELECT round, strategy, "
                  "count(DISTINCT image_id) AS images, round(avg(d), 3) AS mean_d FROM candidates GROUP BY ALL "
                  "ORDER BY ALL\"", highlight=False, soft_wrap=True)
    return result


def _variant_label(name: str, n4: int) -> str:
    strategy, _, r = name.rpartition("_r")
    if strategy in strategies.BUILDS_ON_MAD:
        return f"{strategy} in round {r} (MAD's {n4 * int(r)} + its {n4} images)"
    return f"{'MAD' if strategy == 'mad' else strategy} after round {r} ({n4 * (int(r) + 1)} images of its S)"
