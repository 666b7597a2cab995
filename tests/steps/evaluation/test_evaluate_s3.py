"""Test set, evaluation, competition and report on an s3:// workspace (moto's real HTTP S3)."""

from __future__ import annotations

import evaluate_world as world
from madmine.steps.evaluation import compete, testset
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.report import write_report


def test_the_round_on_s3_equals_the_round_on_disk(tmp_path, s3_bucket, s3_endpoint):
    bucket, options = s3_bucket
    storage = f'[storage]\nendpoint_url = "{s3_endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    remote = world.build(tmp_path / "s3", n=24, workspace_uri=f"s3://{bucket}/ws", extra_toml=storage)
    local = world.build(tmp_path / "disk", n=24)
    assert remote.ws.protocol == "s3"

    results = {}
    for name, w in (("s3", remote), ("disk", local)):
        drawn = testset.build(w.config, w.ws, w.round, size=8, after_s=True).table.column("image_id").to_pylist()
        evaluation = ev.evaluate(w.config, w.ws, show_progress=False)
        ev.save(w.ws, evaluation)
        comp = compete.compete(w.config, w.ws, "target", "fcn", n=5, protocol="d-ranking")  # no size bounds here
        page = write_report(w.config, w.ws, w.round)
        results[name] = (drawn, ev.load(w.ws)[0].select(["label", "testset", "miou", "per_image_miou"]).to_pylist(),
                         [r["image_id"] for r in comp.selection], comp.miou_a, page)
    assert results["s3"][:4] == results["disk"][:4]
    page = results["s3"][4]
    assert page == f"s3://{bucket}/ws/reports/round-1.html"
    html = remote.ws.get_bytes(remote.ws.path("reports", "round-1.html")).decode()
    assert "Table 1" in html and "data:image/jpeg;base64," in html
