"""The demo's Table 1 keeps every strategy's chain apart: two versions of the same round are two rows."""

from __future__ import annotations

from rich.console import Console

from madmine_demo import printout


def _row(model_round, selection, miou, order, role="target", origin="models table"):
    return {"model": "target", "role": role, "origin": origin, "model_round": model_round, "selection": selection,
            "testset_round": 0, "miou": miou, "order": order, "paper_pair": False}


def test_table1_shows_each_chain_of_a_round_on_its_own_row():
    rows = [_row(None, None, 0.817, 0, origin="config"), _row(0, "mad", 0.822, 1), _row(0, "random", 0.836, 2),
            _row(0, "mad-seed1", 0.825, 3)]
    console = Console(record=True, width=120)
    printout.table1(console, rows)
    lines = console.export_text().splitlines()

    def cell(label):
        line = next(line for line in lines if line.startswith(f"│ {label} "))
        return line.split("│")[2].strip()

    assert cell("target (original)") == "81.7"
    assert cell("target after round 0") == "82.2"  # MAD's chain, not the last version written for round 0
    assert cell("target after round 0 (random)") == "83.6"
    assert cell("target after round 0 (mad-seed1)") == "82.5"
