"""Benchmark of `madmine score` with the default config against the bare forward passes of
the same models, and where every second of the pipeline goes.

For each mix of models it prints, in one run on this machine:
  (a) images/s of `madmine score`, whole process (Ray start, model checks, writes included);
  (b) images/s of the bare forward passes of the same models, in one process, on
      preloaded tensors, in the layout and precision the default config picks here;
  (c) a / b (aim >= 0.85);
  (d) seconds per image by phase, summed from the shards' markers (the decode threads
      overlap the forward passes), next to the bare forward time per model, and what is
      left for the driver and start-up;
  (e) for the mixes in --rescore (default: mobile), a re-score of the same corpus with a new
      target version over round 0's time (aim <= 0.5: it runs one of three networks).
Mixes: `mobile` (lraspp target, deeplabv3-mobilenet and lraspp competitors, 513x513),
`heavy` (a deeplabv3_resnet50 target and two mobile competitors), `big` (the mobile mix with
one competitor at 1024x1024), `onnx` (the mobile mix with the deeplabv3-mobilenet competitor
exported to ONNX and run by ONNX Runtime beside the torch target: the mixed-kind case).

Then what bf16 autocast changes against fp32, on a few images of the mobile mix (with
batch-norm statistics measured on them, so that the random networks draw varied maps):
pixel agreement of the maps, correlation of d, overlap of the top-n3 images per
(competitor, class) group; and what the target's uncertainty subgrid
(metrics.uncertainty_stride) changes against every pixel.

    python -m bench.score [--mixes mobile,heavy,big,onnx] [--images 256] [--precision-images 24]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr
from torch import nn

from madmine import metrics
from madmine.allocator import keep_freed_memory
from madmine.completion import shard_markers
from madmine.config import ModelSpec, load_config
from madmine.models.device import resolve_device, resolve_precision
from madmine.models.registry import build_network, check_models, forward_logits
from madmine.steps.ingest import ingest
from madmine.steps.score.context import ScoreContext, column
from madmine.steps.score.decode import decode_batch
from madmine.steps.score.predict import Scorer
from madmine.steps.score.runs import run_records
from madmine.workspace import Workspace

CLASSES = ["background"] + [f"class{i}" for i in range(1, 21)]
MOBILE = [("target", "target", "lraspp_mobilenet_v3_large", 0, 513),
          ("dlv3", "competitor", "deeplabv3_mobilenet_v3_large", 0, 513),
          ("lraspp2", "competitor", "lraspp_mobilenet_v3_large", 1, 513)]
MIXES = {
    "mobile": MOBILE,
    "heavy": [("target", "target", "deeplabv3_resnet50", 0, 513), *MOBILE[1:]],
    "big": [MOBILE[0], MOBILE[1], ("lraspp2", "competitor", "lraspp_mobilenet_v3_large", 1, 1024)],
    "onnx": [MOBILE[0], ("dlv3", "competitor", "onnx:deeplabv3_mobilenet_v3_large", 0, 513), MOBILE[2]],
}
ONNX = "onnx:"  # an arch of a mix exported to an ONNX file: the model entry names the file
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


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


class _Logits(nn.Module):
    """A torchvision model's "out" logits as one tensor: what an ONNX export returns."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


def export_onnx(path: Path, name: str, arch: str, seed: int, size: int) -> None:
    """The randomly initialised torchvision model, exported with a dynamic batch (legacy exporter)."""
    if path.exists():
        return
    spec = ModelSpec(name=name, role="competitor", arch=arch, seed=seed, input_size=size)
    net = _Logits(build_network(spec, len(CLASSES))).eval()
    with torch.no_grad():
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), input_names=["pixels"], output_names=["logits"],
                          dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, dynamo=False)


def calibrate(root: Path, models, uris: list[str]) -> dict[str, str]:
    """Weights files of the mix's networks with their batch-norm statistics measured on the
    corpus (random init otherwise): a randomly initialised network's maps are one class
    everywhere, which would make the precision and subgrid checks say nothing; with its
    activations normalised it draws varied, spatially smooth maps like a trained one."""
    files = {}
    for name, role, arch, seed, size in models:
        path = root / f"{name}.pt"
        if not path.exists():
            spec = ModelSpec(name=name, role=role, arch=arch, seed=seed, input_size=size)
            net = build_network(spec, len(CLASSES))
            for module in net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.reset_running_stats()
                    module.momentum = None  # a plain average over the calibration batches
            net.train()
            with torch.no_grad():
                for x in input_batches(spec, uris, 4):
                    net(x.contiguous())
            torch.save(net.eval().state_dict(), path)
        files[name] = path.name
    return files


def write_config(root: Path, models, scoring: str = "", weights: dict[str, str] | None = None) -> Path:
    """The models and nothing else: the default [scoring] section is what is measured."""
    text = f'[workspace]\nuri = "ws/"\n\n[classes]\nnames = {CLASSES!r}\n'.replace("'", '"')
    for name, role, arch, seed, size in models:
        if arch.startswith(ONNX):
            export_onnx(root / f"{name}.onnx", name, arch[len(ONNX):], seed, size)
            kind = f'onnx = "{name}.onnx"'
        elif weights:
            kind = f'arch = "{arch}"\nweights = "{weights[name]}"'
        else:
            kind = f'arch = "{arch}"\nseed = {seed}'
        text += f'\n[[models]]\nname = "{name}"\nrole = "{role}"\n{kind}\ninput_size = {size}\n'
    if scoring:
        text += f"\n[scoring]\n{scoring}\n"
    path = root / "madmine.toml"
    path.write_text(text)
    return path


def input_batches(spec: ModelSpec, uris: list[str], batch_size: int) -> list[torch.Tensor]:
    """The images resized and normalised for one model, in channels_last batches."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    tensors = []
    for uri in uris:
        img = Image.open(uri).convert("RGB").resize((spec.input_size, spec.input_size), Image.BILINEAR)
        tensors.append((torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255.0 - mean) / std)
    return [torch.cat(tensors[i : i + batch_size]).contiguous(memory_format=torch.channels_last)
            for i in range(0, len(tensors), batch_size)]


def stride_check(config, uris: list[str]) -> None:
    """What the target's subgrid changes: mean entropy and max-softmax per image over every
    pixel against over scoring's stride (metrics.uncertainty_stride), in fp32."""
    spec = config.target
    stride = metrics.uncertainty_stride(spec.input_size)
    net = build_network(spec, config.num_classes)
    whole, sub = [], []
    with torch.inference_mode():
        for x in input_batches(spec, uris, 4):
            logits = forward_logits(net, x)
            whole.append(metrics.maps_entropy_msp(logits, stride=1)[1:])
            sub.append(metrics.maps_entropy_msp(logits, stride=stride)[1:])
    for k, what in enumerate(("entropy", "max-softmax")):
        a = np.concatenate([w[k] for w in whole])
        b = np.concatenate([w[k] for w in sub])
        print(f"  target's mean {what} at stride {stride} against every pixel ({spec.input_size}x{spec.input_size}): "
              f"largest difference {np.abs(a - b).max():.4f} (values {a.min():.3f} to {a.max():.3f}); "
              f"Spearman of the rankings {spearmanr(a, b).statistic:.4f}")


def bare_forward(config, uris: list[str]) -> tuple[float, dict[str, float]]:
    """The ceiling: images/s of every model on preloaded, normalised tensors, as the default
    scoring config runs them (batch size, channels_last, the precision `auto` picks), and
    seconds per image per model."""
    s = config.scoring
    device = resolve_device(s.device)
    bf16 = resolve_precision(s.precision, device) == "bf16"
    keep_freed_memory()  # the allocator setting the scorer uses: the ceiling is measured under it too
    torch.set_num_threads(s.torch_threads or os.cpu_count() or 1)
    per_model: dict[str, float] = {}
    for spec in config.models:
        batches = input_batches(spec, uris, s.batch_size)
        net = build_network(spec, config.num_classes).to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            forward_logits(net, batches[0])  # warm-up, as an actor's first batch
            started = time.perf_counter()
            for x in batches:
                metrics.label_ids(forward_logits(net, x))
            per_model[spec.name] = (time.perf_counter() - started) / len(uris)
    return 1.0 / sum(per_model.values()), per_model


def timed_score(config_path: Path) -> float:
    """Seconds of `madmine score` as a user runs it, in a fresh process (Ray start included)."""
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "madmine"), "--config", str(config_path), "score"], env=ENV,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"madmine score failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def breakdown(ws: Workspace) -> tuple[dict[str, float], float, int]:
    """Seconds per phase summed over the run's shards, the shards' own seconds, images."""
    run = run_records(ws)[-1]
    markers = shard_markers(ws, run["run_id"])
    phases: dict[str, float] = defaultdict(float)
    seconds = images = 0
    for shard in markers.done():
        marker = markers.get(shard)
        seconds += marker["seconds"]
        images += marker["images"]
        for phase, value in marker.get("timings", {}).items():
            phases[phase] += value
    return phases, seconds, images


def run_mix(name: str, models, images: int, work: Path, rescore: bool = False) -> None:
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_corpus(root / "corpus", images, seed=0)
    config_path = write_config(root, models)
    config = load_config(config_path)
    ws = Workspace.from_config(config)
    ingest(ws, [str(root / "corpus")], show_progress=False)
    uris = sorted(str(p) for p in (root / "corpus").glob("*.jpg"))
    device = resolve_device(config.scoring.device)
    precision = resolve_precision(config.scoring.precision, device)
    print(f"\n[{name}] {images} JPEGs 500x375; " + ", ".join(f"{m[0]} {m[2]} at {m[4]}" for m in models)
          + f"; default [scoring]: batch {config.scoring.batch_size}, precision auto -> {precision} on {device}, "
          f"{os.cpu_count()} CPUs", flush=True)
    before, per_before = bare_forward(config, uris)
    seconds = timed_score(config_path)
    after, per_after = bare_forward(config, uris)
    # the ceiling measured on both sides of the run: this machine's speed drifts by tens of percent
    per_model = {name: (per_before[name] + per_after[name]) / 2 for name in per_before}
    ceiling = 1.0 / sum(per_model.values())
    rate = images / seconds
    print(f"  (a) madmine score, whole process: {rate:.2f} images/s ({seconds:.1f} s)")
    print(f"  (b) bare forward passes:          {ceiling:.2f} images/s (mean of {before:.2f} before and {after:.2f} after a)")
    print(f"  (c) a / b = {rate / ceiling:.3f}   (aim >= 0.85)")
    phases, shard_seconds, scored = breakdown(ws)
    print(f"  (d) where the time goes, ms per image ({scored} images, {shard_seconds:.1f} s inside shards):")
    for phase, value in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"      {phase:<45} {1000 * value / scored:8.1f}")
    for model, value in per_model.items():
        print(f"      {'bare forward ' + model:<45} {1000 * value:8.1f}")
    print(f"      {'driver, Ray start, model checks (whole - shards)':<45} {1000 * (seconds - shard_seconds) / scored:8.1f}")
    if rescore:
        rescore_mix(root, models, seconds)


def rescore_mix(root: Path, models, round0: float) -> None:
    """(e) A new target version (another seed): the same corpus re-scored runs only the target;
    the competitors' maps come from the map store."""
    renewed = [(n, role, arch, seed + 100 if role == "target" else seed, size) for n, role, arch, seed, size in models]
    config_path = write_config(root, renewed)
    seconds = timed_score(config_path)
    phases, shard_seconds, scored = breakdown(Workspace.from_config(load_config(config_path)))
    m = len(models) - 1
    print(f"  (e) re-score with a new target version: {seconds:.1f} s over round 0 {round0:.1f} s: {seconds / round0:.2f}"
          f"   aim <= 0.5 (1.3/(m+1) = {1.3 / (m + 1):.2f})")
    top = sorted(phases.items(), key=lambda kv: -kv[1])[:6]
    print(f"      re-score, ms per image ({scored} images, {shard_seconds:.1f} s inside shards): "
          + ", ".join(f"{k} {1000 * v / scored:.1f}" for k, v in top))


def precision_check(images: int, work: Path) -> None:
    """What bf16 changes against fp32: the same images through the same Scorer in both."""
    root = work / "precision"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_corpus(root / "corpus", images, seed=7)
    uris = sorted(str(p) for p in (root / "corpus").glob("*.jpg"))
    weights = calibrate(root, MOBILE, uris)
    out = {}
    for precision in ("fp32", "bf16"):
        config = load_config(write_config(root, MOBILE, scoring=f'precision = "{precision}"', weights=weights))
        ctx = ScoreContext("check", config.classes, (config.target, *config.competitors), check_models(config),
                           config.workspace_uri, {}, config.scoring)
        scorer, batches, started = Scorer(ctx), [], time.perf_counter()
        for i in range(0, len(uris), 4):
            chunk = uris[i : i + 4]
            batch = {"image_id": np.array([f"{j:04d}" for j in range(i, i + len(chunk))], dtype=object),
                     "uri": np.array(chunk, dtype=object), "shard": np.array(["s"] * len(chunk), dtype=object)}
            batches.append(scorer(decode_batch(batch, sizes=ctx.input_sizes)))
        out[precision] = (batches, time.perf_counter() - started, ctx)
    (fp, fp_s, ctx), (bf, bf_s, _) = out["fp32"], out["bf16"]
    print(f"\n[precision] {images} images, mobile mix: fp32 {fp_s:.1f} s, bf16 {bf_s:.1f} s on this machine "
          f"(bf16 {'faster' if bf_s < fp_s else 'slower'}: `auto` picks {resolve_precision('auto', 'cpu')} here)")
    for spec in ctx.models:
        agree = total = 0
        for a, b in zip(fp, bf):
            for image_id, m in a.computed[spec.name].items():
                agree += int((m.map == b.computed[spec.name][image_id].map).sum())
                total += m.map.size
        print(f"  pixel agreement of {spec.name}'s maps: {100 * agree / total:.2f}%")
    n3 = 5
    for spec in ctx.competitors:
        d_fp = np.concatenate([a.columns[column("d", spec.name)] for a in fp])
        d_bf = np.concatenate([b.columns[column("d", spec.name)] for b in bf])
        cp = np.concatenate([a.columns[column("cp", "target")] for a in fp])
        cp_bf = np.concatenate([b.columns[column("cp", "target")] for b in bf])
        kept = total = 0
        for k in range(1, len(CLASSES)):  # groups by the target's map; no size filter here
            top_fp = {i for i in np.argsort(-d_fp)[: len(d_fp)] if cp[i, k] > 0}
            top_bf = {i for i in np.argsort(-d_bf)[: len(d_bf)] if cp_bf[i, k] > 0}
            a = sorted(top_fp, key=lambda i: -d_fp[i])[:n3]
            b = sorted(top_bf, key=lambda i: -d_bf[i])[:n3]
            if a:
                kept += len(set(a) & set(b))
                total += len(a)
        rho = spearmanr(d_fp, d_bf).statistic
        print(f"  {spec.name}: Spearman of d {rho:.4f}; top-{n3} per class group kept {kept} of {total}")
    stride_check(load_config(write_config(root, MOBILE, scoring='precision = "fp32"', weights=weights)), uris)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixes", default="mobile,heavy,big,onnx")
    parser.add_argument("--images", type=int, default=0, help="images per mix (default: 256 mobile, 96 the others)")
    parser.add_argument("--precision-images", type=int, default=24)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/score"))
    parser.add_argument("--rescore", default="mobile", help="mixes also re-scored with a new target version ('' for none)")
    args = parser.parse_args()
    defaults = {"mobile": 256, "heavy": 96, "big": 96, "onnx": 96}
    for name in args.mixes.split(","):
        run_mix(name, MIXES[name], args.images or defaults[name], args.workdir, rescore=name in args.rescore.split(","))
    if args.precision_images:
        precision_check(args.precision_images, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
