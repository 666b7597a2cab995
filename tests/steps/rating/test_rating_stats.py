"""Agreement, selection of S, the cost ledger, and the rate commands that print them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import rating_world
from madmine import tables
from madmine.cli import state as cli_state
from madmine.cli.rate import rate_app
from madmine.steps.rating import agreement, logins, selection, store
from madmine.steps.rating.ledger import ledger
from madmine.steps.rating.tokens import RaterRegistry, add_rater, hash_token

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
# published alphas: nominal 0.743, ordinal 0.815, interval 0.849.
RELIABILITY = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


def event(image_id, rater, score, seconds=0.0):
    stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return {"round": 0, "image_id": image_id, "rater": rater, "score": score,
            "created_at": stamp.isoformat(), "event_id": f"{rater}-{image_id}-{seconds}"}


def test_krippendorff_alpha_matches_the_published_example():
    assert agreement.krippendorff_alpha(RELIABILITY) == pytest.approx(0.815, abs=5e-4)
    assert agreement.krippendorff_alpha(RELIABILITY[:1]) is None
    assert agreement.krippendorff_alpha(np.array([[1, 2, NAN], [NAN, NAN, 3]])) is None


def test_spearman_per_pair_on_shared_images_only():
    latest = store.latest(
        [event(i, "a", s) for i, s in zip("pqrst", [1, 2, 3, 4, 5])]
        + [event(i, "b", s) for i, s in zip("pqrst", [2, 3, 4, 5, 5])]
        + [event(i, "c", s) for i, s in zip("pq", [5, 1])]
        + [event("u", "a", None), event("u", "b", 1)]
    )
    raters, images, matrix = agreement.score_matrix(latest)
    assert raters == ["a", "b", "c"] and images == list("pqrstu") and np.isnan(matrix[0, 5])
    pairs = {(p.rater_a, p.rater_b): p for p in agreement.pairwise_spearman(raters, matrix)}
    # ranks of b: 1, 2, 3, 4.5, 4.5 against 1..5: Pearson of the ranks
    rb = np.array([1, 2, 3, 4.5, 4.5])
    ra = np.arange(1, 6.0)
    expected = ((ra - ra.mean()) @ (rb - rb.mean())) / np.sqrt(((ra - ra.mean()) ** 2).sum() * ((rb - rb.mean()) ** 2).sum())
    assert pairs[("a", "b")].shared == 5
    assert pairs[("a", "b")].spearman == pytest.approx(expected)
    assert pairs[("a", "c")].shared == 2 and pairs[("a", "c")].spearman is None


def test_s_is_the_lowest_mos_without_out_of_domain_and_with_enough_raters():
    events = [
        event("i1", "a", 1), event("i1", "b", 2),            # mos 1.5
        event("i2", "a", 1), event("i2", "b", None),         # one out-of-domain vote drops it
        event("i3", "a", 2), event("i3", "b", 2),            # mos 2.0
        event("i4", "a", 1),                                 # one rater only
        event("i5", "a", 3), event("i5", "b", 1),            # mos 2.0, ties with i3 -> by image_id
        event("i6", "a", 5), event("i6", "b", 4),
        event("i6", "a", 1, seconds=5),                      # a changed her mind: latest wins
    ]
    uris = {f"i{k}": f"/data/i{k}.png" for k in range(1, 8)}
    chosen = selection.select(store.latest(events), 0, uris, n4=3, min_raters=2)
    rows = chosen.table.to_pylist()
    assert [r["image_id"] for r in rows] == ["i1", "i3", "i5"]
    assert [r["mos"] for r in rows] == [1.5, 2.0, 2.0]
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["uri"] == "/data/i1.png"
    assert chosen.out_of_domain == ["i2"] and chosen.short == ["i4"] and chosen.unrated == ["i7"]
    assert chosen.eligible == 4
    wide = selection.select(store.latest(events), 0, uris, n4=10, min_raters=1)
    assert [(r["image_id"], r["mos"]) for r in wide.table.to_pylist()] == [
        ("i4", 1.0), ("i1", 1.5), ("i3", 2.0), ("i5", 2.0), ("i6", 2.5)
    ]


def test_ledger_measures_rating_time_and_prices_masks():
    events = [event(f"x{k}", "a", 3, s) for k, s in enumerate([0, 5, 12, 300, 306])]
    events += [event("y", "b", 2, 50)]
    result = ledger(events, candidates=100, masks=10, seconds_per_rating=7, seconds_per_mask=135, idle_gap_s=120)
    # rater a: gaps 5, 7 and 6 count, 288 is a break; her 2 session starts count as the median gap (6 s);
    # rater b voted once, priced at the default 7 s
    assert result.measured and result.ratings == 6
    assert result.rating_hours * 3600 == pytest.approx(5 + 7 + 6 + 2 * 6 + 7)
    assert result.mask_hours == pytest.approx(10 * 135 / 3600)
    assert result.dense_hours == pytest.approx(100 * 135 / 3600)
    assert result.saved_hours == pytest.approx(result.dense_hours - result.rating_hours - result.mask_hours)
    priced = ledger(events, candidates=100, masks=0, seconds_per_rating=7, seconds_per_mask=135, idle_gap_s=120, measure=False)
    assert priced.rating_hours * 3600 == pytest.approx(6 * 7) and not priced.measured


def test_tokens_are_stored_hashed_and_rekeying_retires_the_old_link(tmp_path):
    world = rating_world.build(tmp_path / "w")
    token = add_rater(world.ws, "alice")
    stored = (world.ws.path("rating", "raters", "alice.json"))
    text = world.ws.get_bytes(stored).decode()
    assert token not in text and hash_token(token) in text
    registry = RaterRegistry(world.ws)
    assert registry.lookup(token) == "alice" and registry.lookup("nope") is None and registry.lookup("") is None
    new = add_rater(world.ws, "alice")
    fresh = RaterRegistry(world.ws)
    assert fresh.lookup(new) == "alice" and fresh.lookup(token) is None
    with pytest.raises(Exception, match="rater name"):
        add_rater(world.ws, "../evil")


@pytest.fixture
def rated(tmp_path):
    world = rating_world.build(tmp_path / "w", extra_toml="[rating]\nmin_raters = 2\n")
    cli_state.set_config_path(world.config_path)
    ids = world.image_ids
    plan = {"alice": [1, 2, 5, 4, None, 3], "bob": [2, 2, 4, 5, 1]}
    for rater, scores in plan.items():
        add_rater(world.ws, rater)
        for image_id, score in zip(ids, scores):
            store.record(world.ws, 0, image_id, rater, score)
    yield world
    cli_state.set_config_path("madmine.toml")


def test_add_rater_prints_a_one_time_link(rated):
    result = CliRunner().invoke(rate_app, ["add-rater", "carol", "--url", "http://127.0.0.1:9999/", "--print-token"])
    assert result.exit_code == 0, result.output
    link, token = [line for line in result.stdout.splitlines() if line.strip()]
    assert link.startswith("http://127.0.0.1:9999/login#carol.") and "?" not in link
    code = link.split("#", 1)[1]
    assert RaterRegistry(rated.ws).lookup(code) is None  # the link holds no lasting credential
    assert RaterRegistry(rated.ws).lookup(token) == "carol"  # the API token does
    assert logins.redeem_code(rated.ws, code) == "carol"
    assert logins.redeem_code(rated.ws, code) is None  # used up
    again = CliRunner().invoke(rate_app, ["link", "carol", "--url", "http://127.0.0.1:9999"])
    assert again.exit_code == 0, again.output
    second = again.stdout.strip().split("#", 1)[1]
    assert second != code and logins.redeem_code(rated.ws, second) == "carol"
    unknown = CliRunner().invoke(rate_app, ["link", "nobody"])
    assert unknown.exit_code == 2 and "no rater named 'nobody'" in unknown.output


def test_status_reports_progress_agreement_shortfall_and_costs(rated):
    result = CliRunner().invoke(rate_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    progress = {p["rater"]: p for p in data["progress"]}
    assert progress["alice"]["rated"] == 6 and progress["alice"]["out_of_domain"] == 1
    assert progress["bob"]["rated"] == 5 and progress["bob"]["of"] == 6
    assert data["short_of_raters"] == [rated.image_ids[5]]
    assert data["out_of_domain"] == [rated.image_ids[4]]
    pair = data["pairs"][0]
    assert (pair["rater_a"], pair["rater_b"], pair["shared"]) == ("alice", "bob", 4)
    assert pair["spearman"] == pytest.approx(0.7378647873726218)
    assert data["krippendorff_alpha_ordinal"] is not None
    assert data["ledger"]["ratings"] == 11 and data["ledger"]["candidates"] == 6
    assert tables.RATINGS.read(rated.ws).num_rows == 11
    text = CliRunner().invoke(rate_app, ["status", "--seconds-per-mask", "100"])
    assert text.exit_code == 0 and "Krippendorff" in text.output and "saved" in text.output


def test_select_refuses_while_images_lack_ratings_then_writes_s(rated):
    refused = CliRunner().invoke(rate_app, ["select", "--n4", "2"])
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "1 lack ratings (0 not rated, 1 short of 2)" in text and "--allow-partial" in text
    assert not rated.ws.exists(tables.SELECTED.path(rated.ws, round=0, strategy="mad"))
    result = CliRunner().invoke(rate_app, ["select", "--n4", "2", "--allow-partial"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tables.SELECTED.path(rated.ws, round=0, strategy="mad")).to_pylist()
    ids = rated.image_ids
    assert [(r["image_id"], r["mos"], r["n_ratings"]) for r in table] == [(ids[0], 1.5, 2), (ids[1], 2.0, 2)]
    assert "1 out of domain" in " ".join(result.output.split())


def test_every_registered_rater_must_rate_by_default(tmp_path):
    """No [rating] min_raters: an image counts once every registered rater voted on it (the paper's three)."""
    world = rating_world.build(tmp_path / "w")
    assert world.config.rating.min_raters is None
    cli_state.set_config_path(world.config_path)
    try:
        ids = world.image_ids
        for rater in ("alice", "bob", "carol"):
            add_rater(world.ws, rater)
        for rater in ("alice", "bob"):
            for image_id in ids:
                store.record(world.ws, 0, image_id, rater, 2)
        status = json.loads(CliRunner().invoke(rate_app, ["status", "--json"]).output)
        assert status["min_raters"] == 3 and status["short_of_raters"] == sorted(ids)
        refused = CliRunner().invoke(rate_app, ["select", "--n4", "2"])
        assert refused.exit_code == 2 and f"{len(ids)} lack ratings" in " ".join(refused.output.split())
        for image_id in ids:
            store.record(world.ws, 0, image_id, "carol", 3)
        chosen = CliRunner().invoke(rate_app, ["select", "--n4", "2"])
        assert chosen.exit_code == 0, chosen.output
        rows = pq.read_table(tables.SELECTED.path(world.ws, round=0, strategy="mad")).to_pylist()
        assert [r["n_ratings"] for r in rows] == [3, 3]
    finally:
        cli_state.set_config_path("madmine.toml")


def test_a_baselines_s_is_its_own_file_and_never_overwrites_mads(rated):
    """rate select --strategy entropy: the baseline's own n4 best-ranked candidates (no ratings, as the
    paper's baselines) -> tables/selected/round-0-entropy.parquet; MAD's S stays as it was."""
    mad = CliRunner().invoke(rate_app, ["select", "--n4", "2", "--allow-partial"])
    assert mad.exit_code == 0, mad.output
    mad_path = tables.SELECTED.path(rated.ws, round=0, strategy="mad")
    before = open(mad_path, "rb").read()
    ids = rated.image_ids
    order = [ids[4], ids[2], ids[5], ids[0]]  # the baseline's ranking, an out-of-domain image first
    rows = [{"round": 0, "image_id": i, "uri": f"u{i}", "strategy": "entropy", "rank": k + 1, "score": 1.0 - k / 10}
            for k, i in enumerate(order)]
    tables.CANDIDATES.write(rated.ws, pa.Table.from_pylist(rows), round=0, strategy="entropy")
    result = CliRunner().invoke(rate_app, ["select", "--strategy", "entropy", "--n4", "3"])
    assert result.exit_code == 0, result.output
    written = pq.read_table(tables.SELECTED.path(rated.ws, round=0, strategy="entropy")).to_pylist()
    assert [r["image_id"] for r in written] == order[:3] and {r["strategy"] for r in written} == {"entropy"}
    assert open(mad_path, "rb").read() == before
    assert tables.SELECTED.read(rated.ws, round=0, strategy="mad").num_rows == 2
