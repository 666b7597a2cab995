"""Bad fine-tuning input is refused before any training starts, with a message naming the file."""

import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from finetune_world import world
from madmine import cli, tables
from madmine.steps.train.data import DataError
from madmine.steps.train.run import finetune
from madmine.workspace import Workspace

FAST = """
lr_grid = [0.01]
epochs = 1
loader_workers = 0
"""


@pytest.fixture()
def cfg(tmp_path):
    return world(tmp_path, n_s=3, n_s0=3, n_t0=2, finetune=FAST)


def refused(cfg, round_: int = 0) -> str:
    with pytest.raises(DataError) as info:
        finetune(cfg, round_, show_progress=False)
    ws = Workspace.from_config(cfg)
    assert not ws.exists(ws.path("finetune")), "training state was written before the input was checked"
    return str(info.value)


def test_empty_s(cfg):
    ws = Workspace.from_config(cfg)
    ws.write_parquet(tables.SELECTED.path(ws, round=0, strategy=tables.MAD), pa.Table.from_pylist([], schema=tables.SELECTED.schema))
    assert "S is empty" in refused(cfg)


def test_round_without_s(cfg):
    ws = Workspace.from_config(cfg)
    ws.remove(tables.SELECTED.path(ws, round=0, strategy=tables.MAD))
    message = refused(cfg)
    assert "round 0 has no S" in message and "madmine rate select --round 0" in message


def test_s_image_without_pixel_label(cfg):
    ws = Workspace.from_config(cfg)
    for path in tables.LABELS.files(ws):
        table = ws.read_parquet([path])
        ws.write_parquet(path, table.slice(1))
    message = refused(cfg)
    assert "no pixel labels" in message and "round 0: 1" in message


def test_mask_size_differs_from_its_image(cfg, tmp_path):
    label = tmp_path / "s0" / "labels" / "a001.png"
    Image.new("L", (20, 17)).save(label)
    message = refused(cfg)
    assert f"label {label} is 20x17 but its image is 48x40" in message


def test_label_values_outside_the_classes(cfg, tmp_path):
    label = tmp_path / "t0" / "labels" / "t001.png"
    Image.new("L", (48, 40), 7).save(label)
    message = refused(cfg)
    assert str(label) in message and "values [7] outside the 4 classes" in message


def test_missing_images(cfg, tmp_path):
    (tmp_path / "s0" / "images" / "a002.png").unlink()
    message = refused(cfg)
    assert "S(0) label" in message and "missing image a002.*" in message
    ws = Workspace.from_config(cfg)
    rows = ws.read_parquet([tables.SELECTED.path(ws, round=0, strategy=tables.MAD)]).to_pylist()
    (tmp_path / "s0" / "images" / "a002.png").write_bytes((tmp_path / "s0" / "images" / "a001.png").read_bytes())
    (tmp_path / "corpus" / rows[0]["uri"].rsplit("/", 1)[1]).unlink()
    message = refused(cfg)
    assert f"S(round 0, mad) {rows[0]['image_id']}: missing image {rows[0]['uri']}" in message


def test_every_problem_is_listed_at_once_and_the_cli_exits_2(cfg, tmp_path):
    Image.new("L", (20, 17)).save(tmp_path / "s0" / "labels" / "a000.png")
    Image.new("L", (48, 40), 9).save(tmp_path / "t0" / "labels" / "t000.png")
    (tmp_path / "s0" / "images" / "a001.png").write_bytes(b"not an image")
    message = refused(cfg)
    assert "3 problem(s)" in message and "nothing was trained" in message
    result = CliRunner().invoke(cli.app, ["--config", str(cfg.path), "finetune", "--round", "0"])
    assert result.exit_code == 2
    assert "3 problem(s)" in result.output and "a000" in result.output


def test_unconfigured_s0_and_maps_target(tmp_path):
    from finetune_world import write_config
    from madmine.config import load_config

    cfg = world(tmp_path, n_s=2, n_s0=2, n_t0=2, finetune=FAST)
    text = cfg.path.read_text().replace('s0_images = "s0/images/"', "")
    cfg.path.write_text(text)
    cfg2 = load_config(cfg.path)
    assert "S(0) is not configured" in refused(cfg2)
    (tmp_path / "maps").mkdir()
    path = write_config(tmp_path, workspace="work/", finetune=FAST)
    path.write_text(
        path.read_text().replace('factory = "madmine.models.tiny:tiny_segnet"\nweights = "target.pt"', 'maps = "maps/"')
    )
    with pytest.raises(Exception, match="maps model"):
        finetune(load_config(path), 0, show_progress=False)


def test_a_second_driver_for_the_same_round_exits_with_the_lock_message(cfg):
    import socket
    import subprocess
    import sys
    import time

    ws = Workspace.from_config(cfg)
    lock = ws.path("locks", "finetune-round-0-mad.json")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            ws.put_json(lock, {"token": "t", "owner": f"{socket.gethostname()}:{other.pid}", "heartbeat": time.time()})
            result = CliRunner().invoke(cli.app, ["--config", str(cfg.path), "finetune", "--round", "0"])
        finally:
            other.kill()
    assert result.exit_code == 2, result.output
    assert "another run holds" in " ".join(result.output.split())
    assert "locks/finetune-round-0-mad.json" in "".join(result.output.split())  # rich may wrap the path
    assert not ws.exists(ws.path("finetune", "round-0-mad", "plan.json"))  # nothing started
    assert ws.exists(lock)  # and the other driver's lock is left alone
