"""Benchmark of `madmine score` against the bare forward passes of the same models.

Prints, in one run on this machine:
  (a) images/s of the scoring pipeline end to end (Ray start excluded);
  (b) images/s of the bare forward passes of the same models, same dtype and layout, on
      preloaded tensors in one process: the ceiling;
  (c) a / b;
  (d) time to re-score with a new target version (competitor maps cached) / round-0 time;
  (e) peak memory (driver + every Ray process) at 1x and 4x the corpus.

    python -m bench.score [--images 256] [--memory-images 128] [--size 513]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from madmine.config import load_config  # noqa: E402
from madmine.models import build_network, forward_logits  # noqa: E402
from madmine.steps.ingest import ingest  # noqa: E402
from madmine.steps.score.run import score  # noqa: E402
from madmine.workspace import Workspace  # noqa: E402

CLASSES = ["background"] + [f"class{i}" for i in range(1, 21)]
MAIN_MODELS = [
    ("target", "target", "lraspp_mobilenet_v3_large", 0),
    ("dlv3", "competitor", "deeplabv3_mobilenet_v3_large", 0),
    ("lraspp2", "competitor", "lraspp_mobilenet_v3_large", 1),
]
LIGHT_MODELS = [
    ("target", "target", "lraspp_mobilenet_v3_large", 0),
    ("lraspp2", "competitor", "lraspp_mobilenet_v3_large", 1),
    ("lraspp3", "competitor", "lraspp_mobilenet_v3_large", 2),
]


def make_corpus(folder: Path, n: int, seed: int) -> None:
    """Real-size JPEGs (500x375) with smooth colour fields and shapes, like web photos."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = ((xx * rng.random() + yy * rng.random()) / 875.0)[..., None]
        img = (c0 * (1 - t) + c1 * t).astype(np.uint8)
        for _ in range(4):
            y, x, r = rng.integers(0, 375), rng.integers(0, 500), rng.integers(20, 120)
            img[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = rng.integers(0, 256, 3)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo_{seed}_{i:05d}.jpg", quality=88)


def write_config(root: Path, models, size: int, weights: dict | None = None) -> Path:
    text = f'[workspace]\nuri = "ws/"\n\n[classes]\nnames = {CLASSES!r}\n'.replace("'", '"')
    for name, role, arch, seed in models:
        text += f'\n[[models]]\nname = "{name}"\nrole = "{role}"\narch = "{arch}"\ninput_size = {size}\nseed = {seed}\n'
        if weights and name in weights:
            text += f'weights = "{weights[name]}"\n'
    text += textwrap.dedent(
        """
        [scoring]
        batch_size = 4
        bf16 = true
        channels_last = true
        shard_size = 64
        decode_batch_size = 8
        """
    )
    path = root / "madmine.toml"
    path.write_text(text)
    return path


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants (Ray's raylet, workers)."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bare_forward_rate(config, n: int) -> float:
    """The ceiling: every model on preloaded, normalised, channels_last tensors, bf16 autocast."""
    torch.set_num_threads(os.cpu_count() or 1)
    manifest = Workspace.from_config(config).read_table("manifest").column("uri").to_pylist()[:n]
    size = config.target.input_size
    mean = torch.tensor(config.target.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.target.std).view(1, 3, 1, 1)
    tensors = []
    for uri in manifest:
        img = Image.open(uri).convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255.0
        tensors.append(((x - mean) / std))
    batch = config.scoring.batch_size
    batches = [torch.cat(tensors[i : i + batch]).contiguous(memory_format=torch.channels_last) for i in range(0, n, batch)]
    nets = [build_network(m, config.num_classes).to(memory_format=torch.channels_last) for m in config.models]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.scoring.bf16):
        for net in nets:  # warm-up, as the pipeline's actors warm up on their first batch
            forward_logits(net, batches[0])
        start = time.perf_counter()
        for x in batches:
            for net in nets:
                forward_logits(net, x).float().argmax(dim=1)
        seconds = time.perf_counter() - start
    return n / seconds


def timed_score(config) -> tuple[float, object]:
    start = time.perf_counter()
    result = score(config, show_progress=False)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--memory-images", type=int, default=128, help="corpus size of the 1x memory run")
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/score"))
    args = parser.parse_args()

    import ray

    from madmine.steps.score.executors.ray_data import ensure_ray

    shutil.rmtree(args.workdir, ignore_errors=True)
    main_root = args.workdir / "main"
    main_root.mkdir(parents=True)
    make_corpus(main_root / "corpus", args.images, seed=0)
    config = load_config(write_config(main_root, MAIN_MODELS, args.size))
    ingest(Workspace.from_config(config), [str(main_root / "corpus")], show_progress=False)
    print(f"corpus: {args.images} JPEGs 500x375; models at {args.size}x{args.size}, bf16 autocast, channels_last, "
          f"{os.cpu_count()} cores; target {MAIN_MODELS[0][2]}, competitors {MAIN_MODELS[1][2]}, {MAIN_MODELS[2][2]}")

    ceiling = bare_forward_rate(config, args.images)
    ensure_ray()
    pipeline_seconds, result = timed_score(config)
    pipeline = result.images_scored / pipeline_seconds
    print(f"(a) madmine score end to end: {pipeline:.2f} images/s ({pipeline_seconds:.1f} s)")
    print(f"(b) bare forward passes:       {ceiling:.2f} images/s")
    print(f"(c) a / b = {pipeline / ceiling:.3f}   (aim >= 0.85)")

    new_target = build_network(config.target, config.num_classes)
    with torch.no_grad():
        for p in new_target.parameters():
            p.mul_(1.01)
    torch.save(new_target.state_dict(), main_root / "target_v2.pt")
    config_v2 = load_config(write_config(main_root, MAIN_MODELS, args.size, weights={"target": "target_v2.pt"}))
    rescore_seconds, rescored = timed_score(config_v2)
    m = len(config.competitors)
    print(
        f"(d) re-score with a new target version: {rescore_seconds:.1f} s = {rescore_seconds / pipeline_seconds:.3f} "
        f"of round 0 (aim <= 1.3/(m+1) = {1.3 / (m + 1):.3f}); forwarded {rescored.forwarded}"
    )
    ray.shutdown()

    peaks = {}
    for factor in (1, 4):
        root = args.workdir / f"memory{factor}x"
        root.mkdir(parents=True)
        make_corpus(root / "corpus", args.memory_images * factor, seed=factor)
        cfg = load_config(write_config(root, LIGHT_MODELS, args.size))
        ingest(Workspace.from_config(cfg), [str(root / "corpus")], show_progress=False)
        ensure_ray()
        with PeakMemory() as mem:
            seconds, res = timed_score(cfg)
        ray.shutdown()
        peaks[factor] = mem.peak
        print(
            f"(e) peak memory at {factor}x ({res.images_scored} images, {res.images_scored / seconds:.2f} images/s): "
            f"{mem.peak / 2**30:.2f} GiB"
        )
    print(f"(e) 4x / 1x peak memory = {peaks[4] / peaks[1]:.3f}   (aim <= 1.15)")


if __name__ == "__main__":
    sys.exit(main())
