"""Scale benchmark: `madmine score` as the corpus grows, measured in shards, requests and memory.

Small generated JPEGs (96x96) and three tiny networks at 64x64, so that the figures are about
madmine rather than the models. For each N (default 20,000 and 100,000; BENCH_SCALE_N="20000,100000"):

  (a) `madmine score`, whole process (Ray start included), against an in-process loop doing
      the same decode, forward passes and metrics with no storage and no Ray  (aim >= 0.8)
  (b) objects written per image                                              (aim <= 0.02)
  (c) peak RSS of the driver process; at the largest N over the smallest      (aim <= 1.15)
  (d) on moto's S3 server (loopback): requests per image of round 0 and of a
      re-score with a new target version                                     (aim <= 0.05)
  (e) on S3: re-score time over round-0 time                                (aim <= 1.3/(m+1))
  (f) `madmine ingest` of the N files, whole process, against a bare loop that reads, hashes
      (sha256) and decodes the same files on 2 threads                       (aim >= 0.8)
  (g) on S3: objects written and requests per image by the ingest
  (h) driver peak RSS of `madmine ingest` with 1,000,000 listed URIs (N new, the rest already
      in the manifest) over that of the ingest of the N files alone           (aim <= 1.15)

    python -m bench.scale                 # both sizes (about 10 minutes on 2 cores)
    BENCH_SCALE_N=2000 python -m bench.scale
    BENCH_SCALE_PARTS=ingest BENCH_SCALE_N=100000 python -m bench.scale    # (f), (g), (h) only
    BENCH_SCALE_PARTS=ingest BENCH_SCALE_N=3000 BENCH_SCALE_INGEST_IMAGE=500x375 python -m bench.scale
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # moto's server that counts requests

from bench.score import breakdown  # noqa: E402
from counting_s3 import CountingS3Server  # noqa: E402
from madmine import tables  # noqa: E402
from madmine.config import load_config  # noqa: E402
from madmine.models.registry import check_models  # noqa: E402
from madmine.steps.ingest import ingest  # noqa: E402
from madmine.steps.score.context import ScoreContext  # noqa: E402
from madmine.steps.score.decode import decode_batch  # noqa: E402
from madmine.steps.score.predict import Scorer  # noqa: E402
from madmine.workspace import Workspace  # noqa: E402

WORK = REPO / "bench-work" / "scale"
CLASSES = ["background", "a", "b", "c", "d"]
MODELS = [("target", "target", "madmine.models.tiny:tiny_segnet", "{seed}"),
          ("dilated", "competitor", "madmine.models.tiny:tiny_dilated", "0"),
          ("segnet", "competitor", "madmine.models.tiny:tiny_segnet", "1")]
BATCH = 64
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "COLUMNS": "250",
       "AWS_EC2_METADATA_DISABLED": "true"}


def make_corpus(n: int, width: int = 96, height: int = 96) -> list[Path]:
    """n JPEGs of width x height with a few coloured shapes (kept between runs)."""
    folder = WORK / ("corpus" if (width, height) == (96, 96) else f"corpus-{width}x{height}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:06d}.jpg" for i in range(n)]

    def one(i: int) -> None:
        if paths[i].exists():
            return
        rng = np.random.default_rng(i)
        img = np.full((height, width, 3), rng.integers(0, 80), dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, height - 16), rng.integers(0, width - 16)
            img[y : y + rng.integers(8, height // 2), x : x + rng.integers(8, width // 2)] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(paths[i], quality=90)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    return paths


def write_config(root: Path, workspace: str, seed: int = 0, storage: str = "") -> Path:
    text = f'[workspace]\nuri = "{workspace}"\n\n[classes]\nnames = {CLASSES!r}\n'.replace("'", '"')
    for name, role, factory, model_seed in MODELS:
        text += (f'\n[[models]]\nname = "{name}"\nrole = "{role}"\nfactory = "{factory}"\ninput_size = 64\n'
                 f"seed = {model_seed.format(seed=seed)}\n")
    text += f"\n[scoring]\nbatch_size = {BATCH}\n{storage}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"madmine-{seed}.toml"
    path.write_text(text)
    return path


def timed_score(config: Path) -> tuple[float, int]:
    """(seconds, peak RSS of the driver) of `madmine score` as a user runs it."""
    seconds, peak, _ = timed_madmine(config, "score")
    return seconds, peak


def timed_madmine(config: Path, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS of the driver, what it printed) of a `madmine` command as a user runs it."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "madmine"), "--config", str(config), *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    driver, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, driver.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    printed = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"madmine {' '.join(args)} failed: {printed[-3000:]}")
    return seconds, peak, printed


def time_split(config: Path) -> dict[str, float]:
    """Where the newest run's shard time went, summed over its shards (from the markers)."""
    phases, seconds, _ = breakdown(Workspace.from_config(load_config(config)))
    return {**phases, "shards": seconds}


def show_split(label: str, whole: float, split: dict[str, float]) -> None:
    top = sorted(((v, k) for k, v in split.items() if k != "shards"), reverse=True)[:6]
    print(f"      {label}: {whole:.1f} s whole process, {split['shards']:.1f} s in shards; "
          + ", ".join(f"{k} {v:.1f}" for v, k in top), flush=True)


def loop_seconds(config: Path, uris: list[str]) -> float:
    """The same decode, forward passes and metrics in one process, nothing stored."""
    cfg = load_config(config)
    ctx = ScoreContext("loop", cfg.classes, (cfg.target, *cfg.competitors), check_models(cfg), cfg.workspace_uri,
                       {}, cfg.scoring)
    scorer = Scorer(ctx)
    started = time.perf_counter()
    for start in range(0, len(uris), BATCH):
        chunk = uris[start : start + BATCH]
        batch = {"image_id": np.array([str(i) for i in range(len(chunk))], dtype=object),
                 "uri": np.array(chunk, dtype=object), "shard": np.array(["s"] * len(chunk), dtype=object)}
        scorer(decode_batch(batch, sizes=ctx.input_sizes, threads=cfg.scoring.decode_threads))
    return time.perf_counter() - started


def bare_ingest_loop(paths: list[Path], threads: int = 2) -> float:
    """Seconds to read, hash (sha256) and decode every file on `threads` threads, nothing stored."""

    def one(path: Path) -> int:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.width

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, paths, chunksize=64):
            pass
    return time.perf_counter() - started


def known_manifest(ws: Workspace, n: int) -> list[str]:
    """A manifest part of n images the listing will name again: known, never read."""
    if not n:
        return []
    ids = np.array([f"{i:032x}" for i in range(n)], dtype=object)
    table = pa.table({
        "image_id": ids,
        "uri": np.char.add(f"{WORK}/known/img_", np.char.zfill(np.arange(n).astype(str), 7)).astype(object),
        "bytes": np.full(n, 3000), "width": np.full(n, 96, np.int32), "height": np.full(n, 96, np.int32),
        "phash": np.arange(n, dtype=np.uint64),
        "ingested_at": pa.array(np.zeros(n, dtype="datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
    }, schema=tables.MANIFEST.schema)
    tables.MANIFEST.write(ws, table.sort_by("image_id"), metadata={tables.SORTED_BY: b"image_id"}, row_group_size=1024,
                          part="part-known")
    return table.column("uri").to_pylist()


def measure_ingest(n: int, paths: list[Path], server: CountingS3Server, listed: int) -> dict:
    """(f), (g), (h): the ingest of n files against the bare loop; on S3; with `listed` URIs named."""
    out = {"n": n, "listed": listed}
    files = [str(p) for p in paths[:n]]
    tag = "" if paths[0].parent.name == "corpus" else f"-{paths[0].parent.name}"
    listing = WORK / f"ingest-uris-{n}{tag}.txt"
    listing.write_text("\n".join(files) + "\n")
    local = WORK / f"ingest-{n}{tag}"
    shutil.rmtree(local, ignore_errors=True)
    config = write_config(local, str(local / "ws") + "/")
    out["ingest_s"], out["ingest_rss"], printed = timed_madmine(config, "ingest", str(listing))
    out["ingest_said"] = " ".join(line.strip() for line in printed.splitlines() if "listed and planned" in line)
    out["parts"] = len(tables.MANIFEST.files(Workspace.from_config(load_config(config))))
    out["bare_s"] = bare_ingest_loop(paths[:n])

    big = WORK / f"ingest-{n}{tag}-listed-{listed}"
    shutil.rmtree(big, ignore_errors=True)
    config = write_config(big, str(big / "ws") + "/")
    known = known_manifest(Workspace.from_config(load_config(config)), listed - n)
    big_listing = WORK / f"ingest-uris-{listed}{tag}.txt"
    big_listing.write_text("\n".join(known + files) + "\n")
    del known
    out["big_s"], out["big_rss"], printed = timed_madmine(config, "ingest", str(big_listing))
    out["big_said"] = " ".join(line.strip() for line in printed.splitlines() if "listed and planned" in line)

    bucket = f"ingest-{n}{tag}".replace("x", "-")
    storage = f'\n[storage]\nendpoint_url = "{server.endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    cfg = load_config(write_config(WORK / f"ingest-s3-{n}{tag}", f"s3://{bucket}/ws", storage=storage))
    ws = Workspace.from_config(cfg)
    ws.fs.mkdir(bucket)
    before = server.snapshot()
    result = ingest(ws, [str(listing)], show_progress=False)
    after = server.snapshot()
    out["s3_puts"] = after["PUT"] - before["PUT"]
    out["s3_requests"] = sum(after.values()) - sum(before.values())
    out["s3_split"] = result.seconds
    return out


def show_ingest(row: dict, image: str) -> None:
    n, listed = row["n"], row["listed"]
    ratio = row["bare_s"] / row["ingest_s"]
    print(f"\nN = {n:,} (ingest, JPEGs {image})", flush=True)
    print(f"  (f) madmine ingest {row['ingest_s']:.1f} s ({n / row['ingest_s']:.0f} images/s) against a bare read + sha256 + "
          f"decode loop on 2 threads {row['bare_s']:.1f} s ({n / row['bare_s']:.0f} images/s): {ratio:.2f}   aim >= 0.8")
    print(f"      madmine ingest said: {row['ingest_said']}")
    split = row["s3_split"]
    print("      on S3: " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()) + " (s; the shard phases summed)")
    print(f"  (g) ingest on S3: {row['s3_puts']} objects written ({row['s3_puts'] / n:.4f} per image), "
          f"{row['s3_requests']} requests ({row['s3_requests'] / n:.4f} per image); {row['parts']} manifest parts")
    grow = row["big_rss"] / row["ingest_rss"]
    print(f"  (h) driver peak RSS: ingest of {n:,} files {row['ingest_rss'] / 2**20:.0f} MiB; {listed:,} listed URIs "
          f"({listed - n:,} known) {row['big_rss'] / 2**20:.0f} MiB in {row['big_s']:.1f} s: {grow:.2f}   aim <= 1.15",
          flush=True)
    print(f"      madmine ingest said: {row['big_said']}", flush=True)


def files_under(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and "manifest" not in p.parts and "ingest" not in p.parts)


def measure(n: int, paths: list[Path], server: CountingS3Server) -> dict:
    out = {"n": n}
    listing = WORK / f"uris-{n}.txt"
    listing.write_text("\n".join(str(p) for p in paths[:n]) + "\n")

    local = WORK / f"local-{n}"
    shutil.rmtree(local, ignore_errors=True)
    config = write_config(local, str(local / "ws") + "/")
    ingest(Workspace.from_config(load_config(config)), [str(listing)], show_progress=False)
    out["score_s"], out["driver_rss"] = timed_score(config)
    out["score_split"] = time_split(config)
    out["objects"] = files_under(local / "ws")
    out["loop_s"] = loop_seconds(config, [str(p) for p in paths[:n]])

    bucket = f"scale-{n}"
    storage = f'\n[storage]\nendpoint_url = "{server.endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    remote = WORK / f"s3-{n}"
    shutil.rmtree(remote, ignore_errors=True)
    config0 = write_config(remote, f"s3://{bucket}/ws", seed=0, storage=storage)
    ws = Workspace.from_config(load_config(config0))
    ws.fs.mkdir(bucket)
    ingest(ws, [str(listing)], show_progress=False)
    before = server.total()
    out["s3_round0_s"], _ = timed_score(config0)
    out["s3_round0_requests"] = server.total() - before
    out["s3_round0_split"] = time_split(config0)
    before = server.total()
    config1 = write_config(remote, f"s3://{bucket}/ws", seed=1, storage=storage)
    out["s3_rescore_s"], _ = timed_score(config1)
    out["s3_rescore_requests"] = server.total() - before
    out["s3_rescore_split"] = time_split(config1)
    return out


def main() -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_SCALE_N", "20000,100000").split(",")]
    parts = os.environ.get("BENCH_SCALE_PARTS", "score,ingest").split(",")
    listed = int(os.environ.get("BENCH_SCALE_LISTED", "1000000"))
    image = os.environ.get("BENCH_SCALE_INGEST_IMAGE", "96x96")  # the ingest's corpus: e.g. 500x375, photo-sized
    m = len(MODELS) - 1
    print(f"corpus: JPEGs 96x96; 3 tiny networks at 64x64 (m = {m} competitors); batches of {BATCH}; "
          f"{os.cpu_count()} CPUs; N = {sizes}", flush=True)
    paths = make_corpus(max(sizes))
    server = CountingS3Server()
    server.start()
    rows = []
    try:
        if "ingest" in parts:
            width, height = (int(v) for v in image.split("x"))
            files = paths if (width, height) == (96, 96) else make_corpus(max(sizes), width, height)
            show_ingest(measure_ingest(max(sizes), files, server, max(listed, max(sizes))), image)
        for n in sizes if "score" in parts else []:
            row = measure(n, paths, server)
            rows.append(row)
            print(f"\nN = {n:,}", flush=True)
            ratio = row["loop_s"] / row["score_s"]
            print(f"  (a) madmine score {row['score_s']:.1f} s ({n / row['score_s']:.0f} images/s) against the "
                  f"in-process loop {row['loop_s']:.1f} s ({n / row['loop_s']:.0f} images/s): {ratio:.2f}   aim >= 0.8")
            show_split("score", row["score_s"], row["score_split"])
            print(f"  (b) objects written: {row['objects']}, {row['objects'] / n:.4f} per image   aim <= 0.02")
            print(f"  (c) driver peak RSS: {row['driver_rss'] / 2**20:.0f} MiB")
            for key, label in (("round0", "round 0"), ("rescore", "re-score, new target version")):
                req = row[f"s3_{key}_requests"]
                print(f"  (d) S3 {label}: {req} requests, {req / n:.4f} per image   aim <= 0.05")
            show_split("S3 round 0", row["s3_round0_s"], row["s3_round0_split"])
            show_split("S3 re-score", row["s3_rescore_s"], row["s3_rescore_split"])
            rescore = row["s3_rescore_s"] / row["s3_round0_s"]
            print(f"  (e) S3 re-score {row['s3_rescore_s']:.1f} s over round 0 {row['s3_round0_s']:.1f} s: {rescore:.2f}"
                  f"   aim <= 1.3/(m+1) = {1.3 / (m + 1):.2f}")
        if len(rows) > 1 and "score" in parts:
            grow = rows[-1]["driver_rss"] / rows[0]["driver_rss"]
            print(f"\n  (c) driver peak RSS at N = {rows[-1]['n']:,} over N = {rows[0]['n']:,}: {grow:.2f}   aim <= 1.15")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
