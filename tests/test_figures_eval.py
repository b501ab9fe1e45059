"""The figures gate: the labelled set scored by scripts/eval_figures.py stays above its floors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "eval_figures.py"
DATA = ROOT / "tests" / "data" / "figures"


def _run(split: str) -> tuple[int, dict[str, dict[str, float]]]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--split", split, "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("split", ["fresh", "dev"])
def test_eval_gate_holds(split: str) -> None:
    code, scores = _run(split)
    assert code == 0, scores["all"]
    assert {"de", "en", "all"} <= set(scores)


def test_labelled_set_size() -> None:
    rows = [
        json.loads(line)
        for name in ("dev", "fresh")
        for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(rows) >= 80
    assert sum(len(r["figures"]) for r in rows) >= 300
    assert {r["lang"] for r in rows} == {"de", "en"}
    for r in rows:
        for fig in r["figures"]:
            assert fig[0] in r["text"], (r["id"], fig[0])
