"""Storage thinks in shards: on S3 the requests and objects of a scoring run grow with its
shards, not with its images, and a re-score with a new target version reads each competitor
shard back in one request. Counted on moto's server (bench/scale.py measures it at 100k)."""

from __future__ import annotations

import pytest
import s3fs

from configs import COLOUR, DILATED, SEGNET, model, models, write_config
from counting_s3 import CountingS3Server
from madmine.config import load_config
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.workspace import Workspace
from worlds import write_corpus


def models_seeded(seed: int) -> str:
    return models(
        model("target", "target", factory=COLOUR, input_size=32, seed=seed),
        model("dilated", "competitor", factory=DILATED, input_size=32),
        model("segnet", "competitor", factory=SEGNET, input_size=32),
    )
SHARD = 16
MODELS_N = 3


@pytest.fixture(scope="module")
def server():
    server = CountingS3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(root, server, images: int, bucket: str):
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": server.endpoint})
    fs.mkdir(bucket)
    write_corpus(root / "corpus", images, seed=images)
    storage = f'[storage]\nendpoint_url = "{server.endpoint}"\nkey = "testing"\nsecret = "testing"\n'

    def config(seed: int):
        text = models_seeded(seed)
        return load_config(write_config(root, text, workspace=f"s3://{bucket}/ws", scoring=f"shard_size = {SHARD}", extra=storage))

    cfg = config(0)
    ingest(Workspace.from_config(cfg), [str(root / "corpus")], show_progress=False)
    before = server.total()
    first = score(cfg, executor="local", show_progress=False)
    round0 = server.total() - before
    objects = len([p for p in fs.find(f"{bucket}/ws") if "/tables/manifest/" not in p and "/errors/ingest/" not in p])
    before = server.total()
    second = score(config(1), executor="local", show_progress=False)  # the target's version changes
    rescore = server.total() - before
    return first, second, round0, rescore, objects


def test_requests_and_objects_grow_with_shards_not_images(tmp_path, server):
    small = run(tmp_path / "small", server, 2 * SHARD, "small")
    large = run(tmp_path / "large", server, 6 * SHARD, "large")
    for first, second, *_ in (small, large):
        assert second.forwarded["dilated"] == second.forwarded["segnet"] == 0 < second.forwarded["target"]
    per_shard = (large[2] - small[2]) / 4
    print(f"\nround 0: {small[2]} requests for 2 shards, {large[2]} for 6: {per_shard:.1f} per shard of {SHARD}")
    # a shard: its manifest slice (a few ranged reads), one pack per model, two tables, one marker
    assert per_shard <= 4 + MODELS_N + 2 + 1 + 2
    rescore_per_shard = (large[3] - small[3]) / 4
    print(f"re-score: {rescore_per_shard:.1f} requests per shard (competitor packs read back, the target's written)")
    assert rescore_per_shard <= 4 + (MODELS_N - 1) + 1 + 2 + 1 + 2
    objects_per_shard = (large[4] - small[4]) / 4
    assert objects_per_shard <= MODELS_N + 2 + 1  # packs, predictions + pairs, marker (and no file per image)
