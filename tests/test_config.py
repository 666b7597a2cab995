"""Config validation: every mistake is refused up front with the key and the fix."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from madmine.config import ConfigError, load_config, parse_config

MINIMAL = """
[workspace]
uri = "work/"

[classes]
names = ["background", "aeroplane", "bicycle"]

[[models]]
name = "target"
role = "target"
arch = "deeplabv3_resnet50"
input_size = 513

[[models]]
name = "fcn"
role = "competitor"
maps = "preds/fcn/"

[selection]
n3 = 25
n4 = 100
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "preds" / "fcn").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "madmine.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_minimal_file_of_the_architecture_works_as_written(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.target.arch == "deeplabv3_resnet50" and cfg.target.input_size == 513
    assert cfg.competitors[0].maps == str(tmp_path / "preds" / "fcn") + "/"
    assert cfg.workspace_uri == str(tmp_path / "work") + "/"
    assert cfg.selection.n3 == 25 and cfg.num_classes == 3


@pytest.mark.parametrize(
    "change, message",
    [
        (('arch = "deeplabv3_resnet50"', 'arch = "deeplabv3_resnet5"'), "did you mean 'deeplabv3_resnet50'"),
        (('role = "competitor"', 'role = "target"'), "exactly one model must have role"),
        (('input_size = 513', 'input_size = 513\nweights = "weights/missing.pt"'), "does not exist"),
        (('n3 = 25', 'n3 = 0'), "n3 must be > 0"),
        (('maps = "preds/fcn/"', 'maps = "preds/fcn/"\nclasses = 21'), "predicts 21 classes but [classes] names lists 3"),
        (('[selection]', '[selection]\nn_3 = 4'), "unknown key 'n_3'"),
        (('uri = "work/"', ''), "[workspace] uri is missing"),
        (('maps = "preds/fcn/"', 'maps = "preds/nowhere/"'), "does not exist"),
        (('arch = "deeplabv3_resnet50"', 'arch = "deeplabv3_resnet50"\nfactory = "a.b:c"'), "exactly one of"),
        (('[selection]', '[labelstudio]\nurl = "127.0.0.1:8080"\n[selection]'), "[labelstudio] url must be an http(s) URL"),
        (('[selection]', '[labelstudio]\ntoken = "Token abc"\n[selection]'), "without spaces or a 'Token ' prefix"),
        (('[selection]', '[labelstudio]\npresign_ttl = 0\n[selection]'), "[labelstudio] presign_ttl must be >= 1"),
        (('[selection]', '[labelstudio]\ndocument_root = "s3://b/x"\n[selection]'), "on the Label Studio server's disk"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(tmp_path, change, message):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert message in str(info.value)


def test_missing_file_and_bad_toml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[workspace\nuri=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_duplicate_class_names_and_model_names_are_refused(tmp_path):
    raw = {
        "workspace": {"uri": "w"},
        "classes": {"names": ["background", "a", "a"]},
        "models": [{"name": "t", "role": "target", "arch": "fcn_resnet50"}],
    }
    with pytest.raises(ConfigError, match="repeats"):
        parse_config(raw, tmp_path)
    raw["classes"]["names"] = ["background", "a"]
    raw["models"].append({"name": "t", "role": "competitor", "arch": "fcn_resnet50"})
    with pytest.raises(ConfigError, match="two models are named 't'"):
        parse_config(raw, tmp_path)


def test_weights_with_another_class_count_fail_before_any_work(tmp_path):
    import torch

    from madmine.models.registry import check_models
    from madmine.models.tiny import tiny_segnet

    torch.save(tiny_segnet(21).state_dict(), tmp_path / "w21.pt")
    raw = {
        "workspace": {"uri": "w"},
        "classes": {"names": ["background", "a", "b"]},
        "models": [
            {"name": "t", "role": "target", "factory": "madmine.models.tiny:tiny_segnet", "weights": "w21.pt"},
            {"name": "c", "role": "competitor", "factory": "madmine.models.tiny:tiny_segnet"},
        ],
    }
    cfg = parse_config(raw, tmp_path)
    with pytest.raises(ConfigError, match="class-count mismatch"):
        check_models(cfg)
    torch.save(tiny_segnet(3).state_dict(), tmp_path / "w21.pt")
    versions = check_models(cfg)
    assert versions["t"].startswith("madmine.models.tiny.tiny_segnet-") and "init" in versions["c"]


def test_labelstudio_section_resolves_the_document_root_and_trims_the_url(tmp_path):
    text = MINIMAL + '\n[labelstudio]\nurl = "http://127.0.0.1:8080/"\ndocument_root = "ls-files"\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.labelstudio.url == "http://127.0.0.1:8080"
    assert cfg.labelstudio.document_root == str(tmp_path / "ls-files") and cfg.labelstudio.token == ""
    assert load_config(write(tmp_path, MINIMAL)).labelstudio.url == ""


def test_parsing_a_config_with_hf_models_and_class_maps_imports_no_torch_and_reaches_no_network(tmp_path):
    """Parsing checks the file's shape only: a Hub checkpoint, a shipped class map and a CSV one are resolved
    later, by the commands that build models (madmine.models.resolve), so `madmine sql` pays for none of it."""
    (tmp_path / "map.csv").write_text("id,name,class\n0,bg,background\n1,plane,aeroplane\n")
    text = MINIMAL.replace('arch = "deeplabv3_resnet50"\ninput_size = 513',
                           'hf = "nvidia/segformer-b0-finetuned-ade-512-512"\nclass_map = "ade20k-voc"')
    write(tmp_path, text.replace('maps = "preds/fcn/"', 'arch = "fcn_resnet50"\nclasses = 2\nclass_map = "map.csv"'))
    script = textwrap.dedent(f"""
        import socket, sys
        def refuse(*args, **kwargs):
            raise AssertionError("parsing reached the network")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from madmine.config import load_config
        config = load_config({str(tmp_path / "madmine.toml")!r})
        assert config.target.hf.startswith("nvidia/") and not config.models_resolved
        heavy = sorted(m for m in ("torch", "torchvision", "transformers", "huggingface_hub", "ray") if m in sys.modules)
        print("heavy:", heavy)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "heavy: []"


def test_resolving_checks_class_maps_before_any_model_is_built(tmp_path):
    """What parsing leaves out, resolving does first: a class map naming an unknown class fails in one line."""
    from madmine.models.resolve import resolve

    (tmp_path / "map.csv").write_text("id,name,class\n0,bg,background\n1,plane,aeroplane\n2,car,vehicle\n")
    text = MINIMAL.replace('maps = "preds/fcn/"', 'arch = "fcn_resnet50"\nclasses = 3\nclass_map = "map.csv"')
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"\[\[models\]\] 'fcn': .*vehicle"):
        resolve(config)
