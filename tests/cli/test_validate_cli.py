"""`madmine validate` with models of every kind: what it shows per model, and what it refuses."""

from __future__ import annotations

import pytest

import model_kinds as mk
from configs import model, write_config
from madmine.cli.main import main
from worlds import ColourNet

SEG_LABELS = {0: "sky", 1: "background", 2: "red", 3: "green", 4: "blue"}
NO_BLUE = '{ "0" = "background", "1" = "red", "2" = "green", "3" = "ignore" }'


def entries(target_map: str) -> str:
    return (
        model("seg", "target", f'hf = "seg"\nclass_map = {target_map}')
        + model("perm", "competitor", 'onnx = "perm.onnx"\nclass_map = "perm.csv"\ninput_size = 32')
        + model("fpn", "competitor", f'smp = "{mk.SMP_ARCH}"\nencoder = "{mk.SMP_ENCODER}"\ninput_size = 48')
        + model("colour", "competitor", f'torchscript = "colour.pt"\ninput_size = 32\nclass_map = {NO_BLUE}')
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    mk.save_segformer(root / "seg", 5, size=40, id2label=SEG_LABELS)
    mk.save_onnx(root / "perm.onnx", mk.PermutedColourNet())
    mk.permuted_csv(root / "perm.csv")
    mk.save_torchscript(root / "colour.pt", mk.Logits(ColourNet()))
    return root


def validate(path, capsys) -> tuple[int, str]:
    try:
        main(["--config", str(path), "validate"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def rows(text: str) -> dict[str, list[str]]:
    """The table's rows by model name, each as its list of cells."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 13 and cells[0] in ("seg", "perm", "fpn", "colour"):
            found[cells[0]] = cells
    return found


def test_validate_shows_kind_classes_coverage_input_precision_and_device(folder, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per row
    path = write_config(folder, entries('{ "sky" = "ignore", "background" = "background", "red" = "red", '
                                        '"green" = "green", "blue" = "blue" }'), scoring='precision = "fp32"')
    code, out = validate(path, capsys)
    assert code == 0, out
    table = rows(out)
    # model, role, kind, source, classes, class map, predicts, never predicts, input, precision, device, trainable, version
    seg, perm, fpn, colour = (table[n] for n in ("seg", "perm", "fpn", "colour"))
    assert seg[1:3] == ["target", "Hugging Face"] and seg[4] == "5" and seg[5] == "inline (5 entries)"
    assert seg[6] == "all 4" and seg[7] == "-" and seg[8] == "40"  # the processor's size
    assert perm[2] == "ONNX" and perm[4] == "6" and perm[5].endswith("perm.csv") and perm[6] == "all 4"
    assert perm[10] == "cpu (CPUExecutionProvider)" and perm[11] == "no"
    assert fpn[2] == "segmentation_models_pytorch" and fpn[4] == "4" and fpn[5] == "-" and fpn[8] == "48" and fpn[11] == "yes"
    assert colour[2] == "TorchScript" and colour[6] == "3 of 4: background, red, green" and colour[7] == "blue"
    assert all(r[9] == "fp32" for r in table.values()) and seg[10] == "cpu"
    assert "note: colour never predicts blue" in " ".join(out.split())


def test_validate_refuses_a_target_that_can_never_predict_a_config_class(folder, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    path = write_config(folder, entries('{ "background" = "background", "red" = "red", "green" = "green" }'))
    code, out = validate(path, capsys)
    assert code == 2
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]  # one line, beside the warnings of random inits
    assert line.startswith("error: the target 'seg' can never predict blue: its class_map maps none of its classes")
