"""The same scoring run with the corpus, the maps and the workspace on s3:// (moto on 127.0.0.1)."""

import s3fs

from configs import COLOUR, SEGNET, model, models, write_config
from madmine import tables
from madmine.config import load_config
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.workspace import Workspace
from worlds import write_corpus, write_maps


def models_with_maps(maps: str) -> str:
    return models(
        model("target", "target", factory=COLOUR, input_size=32),
        model("tiny", "competitor", factory=SEGNET, input_size=32),
        model("ext", "competitor", maps=maps),
    )


def test_s3_run_equals_the_local_run(tmp_path, ray_address, s3_bucket, s3_endpoint):
    bucket, options = s3_bucket
    paths = write_corpus(tmp_path / "corpus", 12, seed=21)
    write_maps(tmp_path / "maps", paths, seed=4)
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(tmp_path / "corpus") + "/", f"{bucket}/corpus/", recursive=True)
    fs.put(str(tmp_path / "maps") + "/", f"{bucket}/maps/", recursive=True)

    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local_dir.mkdir(), remote_dir.mkdir()
    local = load_config(write_config(local_dir, models_with_maps(str(tmp_path / "maps") + "/"), scoring="shard_size = 5"))
    storage = f'[storage]\nendpoint_url = "{s3_endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    remote = load_config(
        write_config(
            remote_dir,
            models_with_maps(f"s3://{bucket}/maps/"),
            workspace=f"s3://{bucket}/ws",
            scoring="shard_size = 5",
            extra=storage,
        )
    )
    ingest(Workspace.from_config(local), [str(tmp_path / "corpus")], show_progress=False)
    added = ingest(
        Workspace.from_config(remote), [f"s3://{bucket}/corpus/"], storage_options=remote.storage_options, show_progress=False
    )
    assert added.added == 12 and not added.errors

    a = score(local, ray_address=ray_address, show_progress=False)
    b = score(remote, ray_address=ray_address, show_progress=False)
    assert a.run_id == b.run_id and b.images_scored == 12 and b.errors == 0
    assert fs.ls(f"{bucket}/ws/tables/predictions/{b.run_id}")  # the tables really are on S3
    local_ws, remote_ws = Workspace.from_config(local), Workspace.from_config(remote)
    for table, keys in (("predictions", ["image_id", "model"]), ("pairs", ["image_id", "competitor"])):
        want = tables.table(table).read(local_ws, run_id=a.run_id).sort_by([(k, "ascending") for k in keys])
        got = tables.table(table).read(remote_ws, run_id=b.run_id).sort_by([(k, "ascending") for k in keys])
        assert got.num_rows == want.num_rows > 0
        assert got.equals(want), table
    # resuming on S3 works the same: a re-run finds every shard committed
    assert score(remote, ray_address=ray_address, show_progress=False).shards_scored == 0
