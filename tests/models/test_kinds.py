"""Every kind of model, built from tiny models saved here (no download), checked against the
library that made it: Hugging Face (semantic and universal), segmentation_models_pytorch,
TorchScript and ONNX; and check_models failing fast and clearly."""

from __future__ import annotations

import dataclasses
import hashlib
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model_kinds as mk
from configs import model, write_config
from madmine.config import ConfigError, load_config
from madmine.models.kinds.onnx import providers_for
from madmine.models.registry import check_models, inspect_models, load_model, model_version
from madmine.models.resolve import resolve
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.predict import Scorer
from madmine.steps.train.versions import parent_of
from madmine.workspace import Workspace
from worlds import ColourNet

FP32 = 'precision = "fp32"'


def config_of(tmp_path, target: str, *competitors: str, scoring: str = FP32):
    """The config with its models resolved, as every command that builds models has it."""
    text = model("target", "target", target) + "".join(
        model(f"c{i}", "competitor", lines) for i, lines in enumerate(competitors)
    )
    return resolve(load_config(write_config(tmp_path, text, scoring=scoring)))


def scorer(config) -> Scorer:
    return Scorer(ScoreContext("t", config.classes, (config.target, *config.competitors), {}, config.workspace_uri,
                               dict(config.storage_options), config.scoring))


def pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def colour_maps(px: np.ndarray) -> np.ndarray:
    """ColourNet's own maps of uint8 pixels with ImageNet normalisation."""
    x = torch.from_numpy(px).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return ColourNet()(x)["out"].argmax(1).numpy().astype(np.uint8)


def sha12(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]


# ---- Hugging Face ------------------------------------------------------------------------------
def test_hf_semantic_reads_its_processor_and_predicts_what_the_transformers_pipeline_predicts(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    folder = mk.save_segformer(tmp_path / "segformer", 4, size=40, seed=3, image_mean=[1.0, 1.0, 1.0],
                               image_std=[0.5, 1.0, 2.0], rescale_factor=1 / 127.5)
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cfg = config_of(tmp_path, 'hf = "segformer"', 'torchscript = "cn.pt"')
    spec = cfg.target
    # the processor computes (uint8 / 127.5 - 1) / std: madmine's (uint8 / 255 - 0.5) / (std / 2)
    assert spec.input_size == 40 and spec.hf == str(folder)
    assert spec.mean == pytest.approx((0.5, 0.5, 0.5)) and spec.std == pytest.approx((0.25, 0.5, 1.0))
    assert config_of(tmp_path, 'hf = "segformer"\ninput_size = 24', 'torchscript = "cn.pt"').target.input_size == 24

    px = pixels(3, 40, seed=1)
    maps, entropy, msp = scorer(cfg).forward(spec, px)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    inputs = processor(images=list(px), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    expected = torch.stack(processor.post_process_semantic_segmentation(out, target_sizes=[(40, 40)] * 3))
    np.testing.assert_array_equal(maps.cpu().numpy(), expected.numpy())
    assert np.isfinite(entropy).all() and np.all((msp > 0.25) & (msp <= 1))  # the target's uncertainty (4 classes)
    assert model_version(spec) == "hf-" + _folder_digest(folder)


def _folder_digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def test_hf_universal_uses_the_processors_semantic_scores_and_class_names(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

    names = {0: "grass", 1: "tomato", 2: "lime", 3: "sea", 4: "night"}
    folder = mk.save_mask2former(tmp_path / "m2f", 5, size=64, seed=1, id2label=names)
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    table = 'class_map = { "tomato" = "red", "lime" = "green", "sea" = "blue", "night" = "background", "*" = "ignore" }'
    cfg = config_of(tmp_path, f'hf = "m2f"\n{table}', 'torchscript = "cn.pt"')
    assert cfg.target.input_size == 64  # the processor's shortest edge
    loaded = load_model(cfg.target, cfg.classes)
    assert loaded.labels == tuple(names.values()) and not loaded.trainable
    np.testing.assert_array_equal(loaded.lut_array(5), [255, 1, 2, 3, 0])

    px = pixels(2, 64, seed=2)
    maps, entropy, msp = scorer(cfg).forward(cfg.target, px)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForUniversalSegmentation.from_pretrained(folder).eval()
    inputs = processor(images=list(px), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"])
    raw = torch.stack(processor.post_process_semantic_segmentation(out, target_sizes=[(64, 64)] * 2))
    np.testing.assert_array_equal(maps.cpu().numpy(), np.array([255, 1, 2, 3, 0], np.uint8)[raw.numpy()])
    assert np.isfinite(entropy).all() and np.isfinite(msp).all()


# ---- segmentation_models_pytorch ---------------------------------------------------------------------
def test_smp_builds_by_name_loads_its_state_dict_and_takes_any_input_size(tmp_path):
    weights = mk.save_smp(tmp_path / "fpn.pt", 5, seed=4)
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    lines = f'smp = "{mk.SMP_ARCH}"\nencoder = "{mk.SMP_ENCODER}"\nweights = "fpn.pt"\nclasses = 5\ninput_size = 40\n'
    lines += 'class_map = { "0" = "background", "1" = "red", "2" = "green", "3" = "blue" }'
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"', lines)
    spec = cfg.competitors[0]
    loaded = load_model(spec, cfg.classes)
    assert loaded.trainable
    reference = mk.smp_model(5, seed=4)
    reference.load_state_dict(torch.load(weights))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.net(x).numpy(), reference(x).numpy())
        assert loaded.net(torch.randn(2, 3, 40, 40)).shape == (2, 5, 40, 40)  # 40 is no multiple of 32: padded
    maps, _, _ = scorer(cfg).forward(spec, pixels(2, 40))
    assert set(np.unique(maps.cpu().numpy())) <= {0, 1, 2, 3, 255}
    base = f"smp.{mk.SMP_ARCH}.{mk.SMP_ENCODER}-{sha12(weights)}"
    assert model_version(spec, classes=cfg.classes).startswith(base + "-cm")


# ---- TorchScript and ONNX -------------------------------------------------------------------------
def test_torchscript_and_onnx_predict_what_the_network_predicts(tmp_path):
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    mk.save_onnx(tmp_path / "cn.onnx", mk.Logits(ColourNet()))
    mk.save_onnx(tmp_path / "cn1.onnx", mk.Logits(ColourNet()), dynamic=False, size=32)  # batch 1, 32x32 only
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"\ninput_size = 32', 'onnx = "cn.onnx"\ninput_size = 48',
                    'onnx = "cn1.onnx"\ninput_size = 32')
    run = scorer(cfg)
    for spec, size in ((cfg.target, 32), (cfg.competitors[0], 48), (cfg.competitors[1], 32)):
        px = pixels(3, size, seed=size)
        maps, _, _ = run.forward(spec, px)
        np.testing.assert_array_equal(maps.cpu().numpy(), colour_maps(px), err_msg=spec.name)
    versions = check_models(cfg)
    assert versions["target"] == f"torchscript-{sha12(tmp_path / 'cn.pt')}"
    assert versions["c0"] == f"onnx-{sha12(tmp_path / 'cn.onnx')}"
    reports = {r.name: r for r in inspect_models(cfg)}
    assert reports["c0"].kind == "ONNX" and reports["c0"].device == "cpu (CPUExecutionProvider)"
    assert reports["c0"].precision == "fp32" and reports["target"].kind == "TorchScript"

    wrong = config_of(tmp_path, 'torchscript = "cn.pt"', 'onnx = "cn1.onnx"\ninput_size = 40')
    with pytest.raises(ConfigError, match=r"takes inputs of 32x32 only; set input_size = 32"):
        check_models(wrong)


def test_onnx_providers_follow_the_scoring_device():
    assert providers_for("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers_for("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


# ---- class maps through scoring, and versions ------------------------------------------------------------------
def test_a_model_on_its_own_label_set_is_mapped_before_anything_is_counted(tmp_path):
    mk.save_onnx(tmp_path / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(tmp_path / "perm.csv")
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"', 'onnx = "perm.onnx"\nclass_map = "perm.csv"\ninput_size = 32')
    spec = cfg.competitors[0]
    px = pixels(4, 32, seed=9)
    maps, _, _ = scorer(cfg).forward(spec, px)
    np.testing.assert_array_equal(maps.cpu().numpy(), colour_maps(px))
    report = {r.name: r for r in inspect_models(cfg)}["c0"]
    assert report.model_classes == 6 and report.never == [] and report.class_map.endswith("perm.csv")

    v1 = check_models(cfg)["c0"]
    assert v1.startswith(f"onnx-{sha12(tmp_path / 'perm.onnx')}-cm")
    (tmp_path / "perm.csv").write_text((tmp_path / "perm.csv").read_text().replace("1,sky,ignore", "1,sky,background"))
    assert check_models(load_config(cfg.path))["c0"] != v1  # another mapping: another version, no stale maps


def test_the_target_may_be_mapped_and_its_uncertainty_is_over_the_config_classes(tmp_path):
    mk.save_onnx(tmp_path / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(tmp_path / "perm.csv")
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cfg = config_of(tmp_path, 'onnx = "perm.onnx"\nclass_map = "perm.csv"\ninput_size = 32', 'torchscript = "cn.pt"')
    px = pixels(2, 32, seed=4)
    maps, entropy, msp = scorer(cfg).forward(cfg.target, px)
    np.testing.assert_array_equal(maps.cpu().numpy(), colour_maps(px))
    # ColourNet's 4 classes, each its own config class: the same entropy as the unmapped network
    _, plain_entropy, plain_msp = scorer(cfg).forward(dataclasses.replace(cfg.competitors[0], role="target"), px)
    np.testing.assert_allclose(entropy, plain_entropy, rtol=1e-4)
    np.testing.assert_allclose(msp, plain_msp, rtol=1e-4)


# ---- failing fast ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, module, extra", [("onnx", "onnxruntime", "onnx"), ("hf", "transformers", "hf"),
                                                 ("smp", "segmentation_models_pytorch", "smp")])
def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch, kind, module, extra):
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    lines = {"onnx": 'onnx = "cn.onnx"', "hf": 'hf = "seg"', "smp": 'smp = "FPN"\nencoder = "mobilenet_v2"'}[kind]
    if kind == "onnx":
        mk.save_onnx(tmp_path / "cn.onnx", mk.Logits(ColourNet()))
    if kind == "hf":
        mk.save_segformer(tmp_path / "seg", 4)
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"', lines)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'madmine\[{extra}\]'"):
        check_models(cfg)


def test_class_counts_that_do_not_fit_fail_before_any_work(tmp_path):
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    mk.save_onnx(tmp_path / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(tmp_path / "perm.csv")
    mapped_wrong = config_of(tmp_path, 'onnx = "perm.onnx"\nclass_map = "perm.csv"', 'torchscript = "cn.pt"\nclass_map = "perm.csv"')
    with pytest.raises(ConfigError, match=r"'c0': the model predicts 4 classes but its class_map 'perm.csv' lists 6"):
        check_models(mapped_wrong)
    unmapped = config_of(tmp_path, 'torchscript = "cn.pt"', 'onnx = "perm.onnx"')
    with pytest.raises(ConfigError, match=r"'c0' predicts 6 classes but \[classes\] names lists 4"):
        check_models(unmapped)
    partial = 'class_map = { "0" = "background", "1" = "red", "2" = "green" }'
    blind = config_of(tmp_path, f'torchscript = "cn.pt"\n{partial}', 'onnx = "perm.onnx"\nclass_map = "perm.csv"')
    with pytest.raises(ConfigError, match=r"the target 'target' can never predict blue"):
        check_models(blind)
    as_competitor = config_of(tmp_path, 'onnx = "perm.onnx"\nclass_map = "perm.csv"', f'torchscript = "cn.pt"\n{partial}')
    assert {r.name: r.never for r in inspect_models(as_competitor)} == {"target": [], "c0": ["blue"]}


def test_exported_files_are_not_fine_tuned(tmp_path):
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"', 'torchscript = "cn.pt"')
    with pytest.raises(Exception, match="runs but does not train"):
        parent_of(cfg, Workspace.from_config(cfg), 0)


def test_entries_are_checked_before_any_model_is_built(tmp_path):
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cases = [
        ('torchscript = "cn.pt"\nweights = "cn.pt"', "holds its weights"),
        ('torchscript = "nowhere.pt"', "TorchScript file"),
        ('onnx = "nowhere.onnx"', "does not exist"),
        ('hf = "./nowhere"', "checkpoint folder"),
        ('torchscript = "cn.pt"\nencoder = "resnet18"', "encoder applies to smp models only"),
        ('torchscript = "cn.pt"\nclass_map = "ade20k-vocc"', "did you mean 'ade20k-voc'"),
        ('torchscript = "cn.pt"\nclass_map = { "3" = "purple" }', "'purple' is not a config class"),
        ('smp = "Unet"\nclass_map = { "3" = "red" }', "set classes = N"),
        ('torchscript = "cn.pt"\nclasses = 6', "predicts 6 classes but [classes] names lists 4"),
    ]
    for lines, message in cases:
        with pytest.raises(ConfigError) as info:
            config_of(tmp_path, 'torchscript = "cn.pt"', lines)
        assert message in str(info.value), (lines, str(info.value))
        assert "'c0'" in str(info.value)


def test_hub_names_are_kept_for_download_and_remote_files_load(tmp_path, s3_bucket):
    bucket, options = s3_bucket
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    folder = mk.save_segformer(tmp_path / "seg", 4, size=32, seed=5)
    mk.save_onnx(tmp_path / "cn.onnx", mk.Logits(ColourNet()))
    fs.put(str(folder), f"{bucket}/models/seg", recursive=True)
    fs.put(str(tmp_path / "cn.onnx"), f"{bucket}/models/cn.onnx")
    endpoint = options["client_kwargs"]["endpoint_url"]
    storage = f'\n[storage]\nendpoint_url = "{endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    text = model("target", "target", f'hf = "s3://{bucket}/models/seg"') + model(
        "c0", "competitor", f'onnx = "s3://{bucket}/models/cn.onnx"\ninput_size = 32')
    cfg = resolve(load_config(write_config(tmp_path, text, scoring=FP32, extra=storage)))
    local = config_of(tmp_path, 'hf = "seg"', 'onnx = "cn.onnx"\ninput_size = 32')
    assert cfg.target.input_size == 32  # read from the processor on S3
    assert check_models(cfg) == check_models(local)  # the same bytes, the same versions
    px = pixels(2, 32, seed=3)
    for remote, here in zip(cfg.models, local.models):
        a = scorer(cfg).forward(remote, px)[0].cpu().numpy()
        b = scorer(local).forward(here, px)[0].cpu().numpy()
        np.testing.assert_array_equal(a, b)

    hub = model("target", "target", 'hf = "nvidia/segformer-b0-finetuned-ade-512-512"\ninput_size = 512\n'
                         'mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\nclass_map = "ade20k-voc"')
    names = '\n[classes]\nnames = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", ' \
            '"chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]\n'
    path = tmp_path / "hub.toml"
    path.write_text('[workspace]\nuri = "work/"\n' + names + hub + model("c0", "competitor", 'onnx = "cn.onnx"'))
    spec = load_config(path).target  # parsed without any download: every preprocessing key is given
    assert spec.hf == "nvidia/segformer-b0-finetuned-ade-512-512" and spec.kind == "hf"


def test_logits_of_a_semantic_hf_model_are_upsampled_to_the_input(tmp_path):
    folder = mk.save_segformer(tmp_path / "seg", 3, size=32)
    mk.save_torchscript(tmp_path / "cn.pt", mk.Logits(ColourNet()))
    cfg = config_of(tmp_path, 'torchscript = "cn.pt"', 'hf = "seg"\nclass_map = { "0" = "red", "1" = "green", "2" = "blue" }')
    loaded = load_model(cfg.competitors[0], cfg.classes)
    x = torch.randn(2, 3, 36, 36)
    with torch.no_grad():
        raw = mk.segformer(3)
        raw.load_state_dict(loaded.net.inner.state_dict())
        expected = F.interpolate(raw(pixel_values=x).logits, size=(36, 36), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(loaded.net(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert folder.exists()
