"""docs/extending.md's task of its own (multi-label tagging) is copied from the page and run as a newcomer would:
its file written, its commands typed (train, resume, eval, predict, export), and the model loaded from Python."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT

SECTION = "## A task of your own: multi-label tagging"
BIN = str(Path(sys.executable).parent)


def section() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    start = text.index(SECTION)
    return text[start:text.index("\n## ", start + len(SECTION))]


def shell(command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"$ {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_tagging_task_of_the_docs_trains_resumes_evaluates_predicts_and_exports(tmp_path):
    page = section()
    (code,) = re.findall(r"```python\n(.*?)```", page, re.S)
    assert code.startswith("# file: tagging.py\n")
    (tmp_path / "tagging.py").write_text(code)
    commands = [line[2:] for line in re.findall(r"```console\n(.*?)```", page, re.S)[0].splitlines()
                if line.startswith("$ ")]
    said = {}
    for command in commands:
        said[command.split()[1] + (" resume" if "resume=" in command else "")] = shell(command, tmp_path)
    run = tmp_path / "outputs" / "tags"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["test/f1"] > 0.85, summary  # the tags are learned (an untrained net: about 0.5)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["fit"]["epoch"] == 6 and last["plugins"]["task"] == "tagging"
    assert "resuming outputs/tags at epoch 5" in said["train resume"]
    assert re.search(r"test/f1\s*│\s*0\.[89]", said["eval"]) and "per tag" in said["eval"], said["eval"]
    assert re.search(r"north\s*│\s*[01]\.\d+\s*│", said["eval"])
    rows = list(csv.DictReader((tmp_path / "tags.csv").open()))
    tags = {"north", "east", "high", "far"}
    assert len(rows) == 2 and all(set(filter(None, r["tags"].split(";"))) <= tags for r in rows)
    assert all(0 <= float(r["p_far"]) <= 1 for r in rows)
    assert "matches trainkit" in said["export"] and (tmp_path / "tags.onnx").is_file()
    loaded = shell(f"{shlex.quote(sys.executable)} -c \"import trainkit; m = trainkit.load('outputs/tags', "
                   f"plugins=['tagging']); print(m.predict([[1.8,0.5,-1.7,-1.7,2.0,-0.3,-0.1,-1.4]]))\"", tmp_path)
    assert loaded.strip() == str([rows[0]["tags"].split(";")])
