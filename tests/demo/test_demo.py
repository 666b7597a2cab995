"""`madmine demo`, reduced (a small corpus, two rounds, two training seeds, tiny schedules),
end to end on the session's Ray cluster: every stage runs, the people act through the real
storage and export/import paths, and the measurements come out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from madmine import names, tables
from madmine.config import load_config
from madmine.steps import reads
from madmine.steps.rating import store
from madmine.workspace import Workspace

pytestmark = pytest.mark.timeout(1500)  # the first test also builds the world, trains the zoo and runs the demo


@pytest.fixture(scope="module")
def demo(ray_address, tmp_path_factory):
    from madmine_demo.demo import run_demo

    workdir = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    result = run_demo(workdir, quick=True, rounds=2, seeds=2, ray_address=ray_address)
    return result, time.perf_counter() - started


def test_every_stage_runs_and_is_timed(demo):
    result, seconds = demo
    names = [name for name, _ in result.timings]
    for stage in ("world", "models", "ingest", "bounds", "round 0: score", "round 0: select", "round 0: rate",
                  "round 0: testset", "round 0: S", "round 0: annotate", "round 0: finetune", "round 0: test_labels",
                  "round 0: entropy, random select with MAD's budget", "round 0: entropy: its S of 12",
                  "round 0: random: its S of 12", "round 1: entropy, random, learned, hybrid select",
                  "round 1: entropy: its S of 12", "round 1: learned: its S of 12", "round 1: hybrid: its S of 12",
                  "round 0: failure yields, and every selector", "round 1: failure yields, and every selector",
                  "seed 1: fine-tune mad's S of round 0", "seed 1: fine-tune mad's S of round 1",
                  "seed 1: fine-tune hybrid's S of round 1", "evaluate", "report", "arena"):
        assert any(n.startswith(stage) for n in names), (stage, names)
    assert all(s >= 0 for _, s in result.timings)
    assert sum(s for _, s in result.timings) <= seconds  # the stages' clocks account for no more than the wall time


def test_people_went_through_the_real_storage_and_exports(demo):
    result, _ = demo
    config = load_config(result.workdir / "madmine.toml")
    ws = Workspace.from_config(config)
    events = store.load_events(ws, 0)
    assert {e["rater"] for e in events} == {"alice", "bob", "carol"}
    selected = ws.read_parquet([tables.SELECTED.path(ws, round=0, strategy="mad")]).to_pylist()
    assert len(selected) == 12
    ood = {e["image_id"] for e in events if e["score"] is None}
    assert not ood & {r["image_id"] for r in selected}  # out-of-domain votes drop images
    labels = reads.labels(ws)
    testset = reads.testsets(ws)[0]
    assert {r["image_id"] for r in selected} | {r["image_id"] for r in testset} <= set(labels)
    assert {row["source"] for row in labels.values()} == {"coco"}
    models = reads.models_table(ws)
    assert [r["round"] for r in models if r["model"] == "target" and r["selection"] == "mad"] == [0, 1]


def test_table1_and_the_failure_yields(demo):
    result, _ = demo
    rows = {(r["model"], r["origin"], r["testset_round"]): r for r in result.table1}
    for origin in ("config", "models table"):
        for testset in (names.HELD_OUT, 0):
            assert rows[("target", origin, testset)]["miou"] is not None
    for competitor in ("unet", "fcn", "mobile"):
        assert rows[(competitor, "config", names.HELD_OUT)]["miou"] > 0
    yields = {y.name.split(":")[0].split(",")[0]: y for y in result.yields[0]}
    assert yields["S"].images == 12 and yields["S"].in_domain == 12
    assert yields["M"].images >= 12


COMPARED = {"mad_r0", "entropy_r0", "random_r0", "mad_r1", "entropy_r1", "random_r1", "learned_r1", "hybrid_r1"}


def test_arena_runs_the_mad_competitions_among_the_fine_tuned_targets(demo):
    result, _ = demo
    arena = result.arena
    assert set(arena.models) == {"target"} | COMPARED | {f"{name}_s1" for name in COMPARED}
    assert all(0 <= arena.miou[m] <= 1 for m in arena.models)
    assert set(arena.gain) == set(arena.models) - {"target"}
    for name, (value, low, high) in arena.gain.items():
        assert low <= value <= high
        assert abs(value - (arena.miou[name] - arena.miou["target"])) < 1e-9
    # the paper's Table 2: MAD's version of each round against the original and every compared strategy's
    assert {(c.a.name, c.b.name) for c in arena.competitions} == {("mad_r0", "target")} | {
        (f"mad_r{r}", name) for name in COMPARED for r in (0, 1) if name.endswith(f"_r{r}") and not name.startswith("mad")}
    for comp in arena.competitions:
        assert comp.protocol == "mad" and not comp.waiting and not comp.waiting_raters
        assert len(comp.labelled) + len(comp.vetoed) == len(comp.selection) > 0
        assert comp.diff_low <= comp.miou_a - comp.miou_b <= comp.diff_high
        assert comp.winner in (None, comp.a.label, comp.b.label)


def test_failure_rates_per_kind_on_the_probe_and_t0_of_every_target(demo):
    from madmine_demo import settings as demo_settings
    from madmine_demo.world.failures import KINDS

    result, _ = demo
    probe, t0 = result.probe, result.t0
    assert set(probe.models) == set(t0.models) == set(result.arena.models)
    per_kind = demo_settings.QUICK.probe_per_kind
    assert probe.images == per_kind * len(KINDS)
    for model in probe.models:
        rates = probe.failures_by_kind[model]
        assert set(rates) == set(KINDS) and all(0 <= r <= 1 for r in rates.values())
        # the per-kind rates of equal-sized kinds average to the failure rate over the whole probe
        assert abs(sum(rates.values()) / len(KINDS) - probe.failures[model]) < 1e-9
    # T(0) held-out of the original and of each round's target: the main workspace's own evaluation says the same
    rows = {(r["model"], r["origin"], r.get("model_round"), r["testset_round"]): r for r in result.table1
            if r.get("selection") in (None, "mad")}
    assert t0.miou["target"] == pytest.approx(rows[("target", "config", None, names.HELD_OUT)]["miou"], abs=1e-9)
    for r in (0, 1):
        own = rows[("target", "models table", r, names.HELD_OUT)]["miou"]
        assert t0.miou[f"mad_r{r}"] == pytest.approx(own, abs=1e-9)


def test_report_and_cached_models(demo):
    result, _ = demo
    assert all(Path(r).is_file() and Path(r).stat().st_size > 1000 for r in result.reports)
    from madmine_demo import settings
    from madmine_demo.demo import zoo_key
    from madmine_demo.world.shapes import NAMES
    from madmine_demo.zoo.training import ensure_trained

    world = result.workdir / "world" / "train"
    trained = []
    paths = ensure_trained(settings.zoo(settings.QUICK), world / "images", world / "labels",
                           result.workdir / "workspace" / "zoo", len(NAMES), zoo_key(settings.QUICK), report=trained.append)
    assert not trained and all(p.exists() for p in paths.values())  # a second demo trains nothing


def test_learned_strategies_in_round_1_and_the_spread_over_seeds(demo):
    from madmine.steps.learned import Trained

    result, _ = demo
    trained = result.learned
    assert isinstance(trained, Trained) and trained.rounds == [0] and trained.examples >= 10
    assert 0 <= trained.auroc <= 1 or trained.heldout_failures in (0, trained.heldout)
    yields = {y.name: y for y in result.yields[1]}
    m = yields[next(n for n in yields if n.startswith("M:"))]
    assert yields["learned selection, |M|"].images == m.images  # MAD's budget
    assert 0 < yields["hybrid selection, |M|"].images <= m.images  # MAD's groups, fewer distinct images
    assert yields["learned selection, |S|"].images == 12  # the same labelling budget as S
    assert 0 < yields["hybrid selection, |S|"].images <= 12  # within MAD's groups, as many as T(2) leaves
    # the seed-1 runs are other training runs of the same S: each variant's spread holds both seeds'
    # figures, and seed 0's are those of Table 2
    arena = result.arena
    assert set(result.spread) == COMPARED
    for name, spread in result.spread.items():
        assert spread.gains == [arena.gain[name][0], arena.gain[f"{name}_s1"][0]]
        assert spread.t0 == [result.t0.miou[name], result.t0.miou[f"{name}_s1"]]
        assert spread.probe_failures == [result.probe.failures[name], result.probe.failures[f"{name}_s1"]]


def test_every_selector_is_judged_over_the_whole_corpus_in_each_round(demo):
    result, _ = demo
    for r, judged in result.selectors.items():
        rows = {row["selector"]: row for row in judged.rows}
        assert judged.pool == 240  # every scored image of the corpus, known by the world's truth
        assert {"d max", "d mean", "entropy", "max-softmax", "mad", "random"} <= set(rows)
        assert ("learned" in rows) and (rows["learned"].get("note") is not None) == (r == 0)  # round 0 has no ratings yet
        for row in rows.values():
            if row.get("auroc") is not None:
                assert row["auroc_low"] <= row["auroc"] <= row["auroc_high"]
    assert set(result.selectors) == {0, 1}


def test_the_round_1_comparison_through_the_commands_alone_gives_the_demos_yields(demo, tmp_path):
    """The demo's learned and hybrid picks of round 1 are what `madmine select` and `madmine rate select` give in a
    copy of its workspace, each run where the demo ran it (select before round 1's test set and labels existed,
    rate select after T(2) was drawn): the same candidates, the same S, the same yields."""
    import shutil

    from typer.testing import CliRunner

    from madmine.cli import app
    from madmine.cli import state as cli_state
    from madmine_demo import measure
    from madmine_demo import settings as demo_settings
    from madmine_demo.world.datasets import write
    from madmine_demo.world.failures import KINDS
    from madmine_demo.world.shapes import NAMES
    from madmine_demo.world.truth import Truth

    result, _ = demo
    copy = tmp_path / "copy"
    shutil.copytree(result.workdir, copy, ignore=shutil.ignore_patterns("arena*", "exports"))
    config = load_config(copy / "madmine.toml")
    ws = Workspace.from_config(config)
    original = Workspace.from_config(load_config(result.workdir / "madmine.toml"))
    mad_run = tables.CANDIDATES.read_file(ws, round=1, strategy="mad").column("run_id")[0].as_py()
    t2 = tables.TESTSETS.path(ws, round=1)
    drawn = ws.get_bytes(t2)

    def madmine(*args):
        done = CliRunner().invoke(app, ["--config", str(copy / "madmine.toml"), *args], catch_exceptions=False)
        assert done.exit_code == 0, done.output

    try:
        # the workspace as round 1's selections saw it: no T(2), no labels of round 1 yet
        ws.remove(t2)
        for part in tables.LABELS.files(ws):
            rows = [r for r in ws.read_parquet([part]).to_pylist() if r.get("round") != 1]
            tables.LABELS.write(ws, tables.LABELS.from_rows(rows), part=tables.LABELS.keys_of(part)["part"])
        for strategy in ("learned", "hybrid"):
            ws.remove(tables.CANDIDATES.path(ws, round=1, strategy=strategy))
            ws.remove(tables.SELECTED.path(ws, round=1, strategy=strategy))
            madmine("select", "--round", "1", "--strategy", strategy, "--run-id", mad_run)
        ws.put_bytes(t2, drawn)  # then T(2), drawn before any S of round 1
        for strategy in ("learned", "hybrid"):
            madmine("rate", "select", "--round", "1", "--strategy", strategy)
            for table in (tables.CANDIDATES, tables.SELECTED):
                assert (table.read_file(ws, round=1, strategy=strategy).column("image_id").to_pylist()
                        == table.read_file(original, round=1, strategy=strategy).column("image_id").to_pylist())
    finally:
        cli_state.set_config_path("madmine.toml")
    q = demo_settings.QUICK
    sets = [write(copy / "world", name, size, q.seed, domain) for name, size, domain in (
        ("wild", q.corpus, q.world), ("heldout", q.heldout, q.world), ("probe", q.probe_per_kind * len(KINDS), "probe"),
        ("t0", q.t0, "train"))]
    truth = Truth(sets, len(NAMES))
    truth.add_manifest(ws)
    again, _ = measure.round_yields(ws, truth, 1, q.seed)
    assert [(y.name, y.images, y.failures) for y in again] == [(y.name, y.images, y.failures) for y in result.yields[1]]


def test_the_findings_are_sentences_from_the_runs_own_tables(demo):
    result, _ = demo
    text = "\n".join(result.findings)
    for r, rows in result.yields.items():
        m = next(y for y in rows if y.name.startswith("M:"))
        assert f"Round {r}: MAD's M holds {m.rate:.1%} failures ({m.failures} of {m.images})" in text
    for r, judged in result.selectors.items():
        d = next(row for row in judged.rows if row["selector"] == "d max")
        assert f"d max {d['auroc']:.3f} ({d['auroc_low']:.3f}..{d['auroc_high']:.3f})" in text
    for c in result.arena.competitions:
        assert f"images won {c.wins_a}:{c.wins_b}" in text
    assert f"AUROC {result.learned.auroc:.3f}" in text


def test_each_fine_tuning_says_its_fit_and_its_repair_per_kind_is_counted_on_the_probe(demo):
    from madmine_demo.measure import parent_of

    result, _ = demo
    assert set(result.fits) == COMPARED | {f"{name}_s1" for name in COMPARED}
    for name, fit in result.fits.items():
        assert 0 <= fit["s_failures"] <= 1 and 0 <= fit["parent_s_failures"] <= 1
        (s_row,) = [r for r in fit["repair"] if r["set"] == "S"]
        assert s_row["failures"] - s_row["fixed"] + s_row["broke"] == round(fit["s_failures"] * s_row["images"])
    assert set(result.repair) == COMPARED
    probe = result.probe
    for name, per_kind in result.repair.items():
        parent = parent_of(name)
        strategy = name.rpartition("_r")[0]
        assert parent == ("target" if name.endswith("_r0") else "mad_r0" if strategy in ("learned", "hybrid")
                          else f"{strategy}_r0")
        for kind, counted in per_kind.items():
            ids = [i for i, k in probe.kinds.items() if k == kind]
            before = [probe.image_mious[parent][i] for i in ids]
            after = [probe.image_mious[name][i] for i in ids]
            by_hand = (sum(b < 0.5 for b in before), sum(b < 0.5 <= a for b, a in zip(before, after)),
                       sum(b >= 0.5 for b in before), sum(a < 0.5 <= b for b, a in zip(before, after)))
            assert (counted.failures, counted.fixed, counted.passing, counted.broke) == by_hand
            # the failure rate after is the probe's per-kind rate of the fine-tuned target
            assert (counted.failures_after / len(ids)) == pytest.approx(probe.failures_by_kind[name][kind])
