"""Plugins: a user's own model, dataset and task registered by name from their own module, chosen like built-ins,
through every command; a checkpoint or a config never makes trainkit import code; errors for people.

docs/extending.md's "Bring your own model" section is run verbatim: its files written, its commands typed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli

SECTION = "## Bring your own model, data and task: plugins"
BIN = str(Path(sys.executable).parent)


def readme_section() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def write_readme_files(where: Path) -> list[str]:
    """The section's files (each block that starts with `# file: PATH`) written under `where`; its commands."""
    section = readme_section()
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S):
        first = block.splitlines()[0]
        assert first.startswith("# file: "), first
        path = where / first.removeprefix("# file: ").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    console = re.findall(r"```console\n(.*?)```", section, re.S)[0]  # the second one shows an error
    return [line[2:] for line in console.splitlines() if line.startswith("$ ")]


def readme_error() -> tuple[str, str]:
    """The section's command that fails without the plugin, and what the README says it prints."""
    lines = re.findall(r"```console\n(.*?)```", readme_section(), re.S)[1].splitlines()
    return lines[0].removeprefix("$ "), lines[1]


def shell(command: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, f"$ {command}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_readme_example_runs_verbatim_train_resume_eval_predict_export_list_load(tmp_path):
    commands = write_readme_files(tmp_path)
    said = {}
    for command in commands:
        said[command.split()[1] + (" resume" if "resume=" in command else "")] = shell(command, tmp_path).stdout
    assert "best checkpoint: outputs/spirals/checkpoints/best.ckpt" in said["train"]
    run = tmp_path / "outputs" / "spirals"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["test/acc"] > 0.7, summary  # the spirals are learned, not guessed (0.5)
    stored = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert stored["fit"]["epoch"] == 12  # the resume went on to epoch 12 in the same run
    assert stored["plugins"] == {"model": "my_project.nets", "dataset": "my_project.nets", "task": "my_project.nets"}
    assert re.search(r"test/acc\s*│\s*0\.[789]", said["eval"]), said["eval"]
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert [r["label"] in ("inner", "outer") for r in rows] == [True, True]
    assert "matches trainkit" in said["export"] and (tmp_path / "spirals.onnx").is_file()
    assert re.search(r"resmlp\s+plugin my_project\.nets\s+my_project\.nets\.ResMLP \(my_project/nets\.py:\d+\)",
                     said["list"]), said["list"]
    assert re.search(r"focal\s+plugin my_project\.nets", said["list"])
    loaded = shell(f"{shlex.quote(sys.executable)} -c \"import trainkit; m = trainkit.load('outputs/spirals', "
                   f"plugins=['my_project.nets']); print(m.predict([[0.5, 0.1], [-0.4, 0.7]]))\"", tmp_path).stdout
    assert loaded.strip() == str([r["label"] for r in rows])
    command, printed = readme_error()
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"})
    assert proc.returncode == 1 and " ".join(proc.stderr.split()) == printed and proc.stdout == "", proc.stderr


def test_a_plugin_model_sweeps_with_data_parallel_jobs(tmp_path):
    """One sweep job of two processes: the sweep's job, and each process composing the user's --config-dir YAML."""
    write_readme_files(tmp_path)
    yaml = tmp_path / "my_configs" / "model" / "resmlp.yaml"
    yaml.write_text(yaml.read_text().replace("width: 64", "width: 24"))
    swept = run_cli("train", "-m", "plugins=[my_project.nets]", "--config-dir", "my_configs", "model=resmlp",
                    "data=spirals", "task=focal", "data.n=200", "trainer.max_epochs=1", "trainer.progress=plain",
                    "task.gamma=1.0", "trainer.devices=2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    (row,) = list(csv.DictReader((tmp_path / "sweep" / "sweep_summary.csv").open()))
    assert row["status"] == "finished" and "trainer.devices=2" in row["overrides"], swept.stdout
    stored = torch.load(tmp_path / row["path"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "width: 24" in stored["config"] and stored["modules"]["net"]["inp.weight"].shape == (24, 2)
    assert "gamma: 1.0" in stored["config"] and stored["plugins"]["model"] == "my_project.nets"


MARKED = '''
from pathlib import Path
Path("imported.marker").write_text("the plugin module ran")

import torch
import trainkit


@trainkit.register_model("marked_net")
class MarkedNet(torch.nn.Linear):
    def __init__(self, in_shape, num_outputs):
        super().__init__(in_shape[0], num_outputs)
'''
QUICK = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.max_epochs=1", "trainer.progress=plain"]


def test_a_checkpoint_never_imports_code_says_which_plugin_to_load_and_never_instantiates_a_target(tmp_path):
    (tmp_path / "marked.py").write_text(MARKED)
    (tmp_path / "boom.py").write_text('from pathlib import Path\nPath("boom.marker").write_text("ran")\n'
                                      'def make(*args, **kwargs):\n    Path("made.marker").write_text("ran")\n')
    run_cli("train", "plugins=[marked]", "model=marked_net", *QUICK, "hydra.run.dir=run", cwd=tmp_path)
    marker = tmp_path / "imported.marker"
    assert marker.is_file()
    marker.unlink()
    proc = run_cli("eval", "ckpt=run", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and not marker.exists()
    message = " ".join(proc.stderr.split())
    assert "trained with the model 'marked_net' of the plugin module marked, which is not loaded" in message
    assert "Load it: trainkit eval ckpt=run plugins=[marked]" in message
    assert "Traceback" not in proc.stdout + proc.stderr
    # A `_target_` written into the checkpoint's config is a key the model does not have, never code to run.
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    payload = torch.load(ckpt, map_location="cpu", weights_only=False)
    payload["config"] = payload["config"].replace("model:\n", "model:\n  _target_: boom.make\n", 1)
    torch.save(payload, ckpt)
    stored = run_cli("eval", f"ckpt={ckpt}", "plugins=[marked]", cwd=tmp_path, check=False)
    said = " ".join(stored.stderr.split())
    assert stored.returncode == 1 and "model._target_ is not a setting of model=marked_net" in said, stored.stderr
    assert not (tmp_path / "boom.marker").exists() and not (tmp_path / "made.marker").exists()


@pytest.fixture
def own_registry(tmp_path, monkeypatch):
    """Plugins loaded in this process by a test, forgotten after it: the registries, the loaded modules, sys.path."""
    from trainkit import registry

    saved = {kind: dict(r.entries) for kind, r in registry.REGISTRIES.items()}
    loaded, modules, path = dict(registry.LOADED), set(sys.modules), list(sys.path)
    monkeypatch.chdir(tmp_path)
    yield registry
    for kind, entries in saved.items():
        registry.REGISTRIES[kind].entries.clear()
        registry.REGISTRIES[kind].entries.update(entries)
    registry.LOADED.clear()
    registry.LOADED.update(loaded)
    for name in set(sys.modules) - modules:  # the test's own plugin modules; never a library's (torch's
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):  # re-registers)
            del sys.modules[name]
    sys.path[:] = path


def test_plugin_mistakes_are_errors_for_people(tmp_path, own_registry):
    import trainkit
    from trainkit.errors import ConfigError

    (tmp_path / "broken.py").write_text("import trainkit\n\nx = 1\nraise RuntimeError('no GPU driver here')\n")
    (tmp_path / "typo.py").write_text("def f(:\n    pass\n")
    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text("import torch\nimport trainkit\n\n\n@trainkit.register_model('net')\n"
                                             "class Net(torch.nn.Linear):\n    pass\n")
    (tmp_path / "shapes.py").write_text(textwrap.dedent('''
        import torch
        import trainkit

        @trainkit.register_model("ten_inputs")
        def ten_inputs(num_outputs):
            return torch.nn.Linear(10, num_outputs)

        @trainkit.register_model("three_outputs")
        def three_outputs(in_shape):
            return torch.nn.Linear(in_shape[0], 3)
        '''))

    (tmp_path / "boom.py").write_text('from pathlib import Path\nPath("boom.marker").write_text("ran")\n')

    def said(*args: str) -> str:
        with pytest.raises(ConfigError) as caught:
            trainkit.train([*args, *QUICK])
        return " ".join(str(caught.value).split())

    typed = said("+model._target_=boom.make")  # typed by a user: a key the model does not have, never code
    assert "model._target_ is not a setting of model=mlp" in typed and not (tmp_path / "boom.marker").exists()
    broken = said("plugins=[broken]")
    assert f"{tmp_path / 'broken.py'}:4: RuntimeError: no GPU driver here" in broken, broken
    typo = said("plugins=[typo]")
    assert f"{tmp_path / 'typo.py'}:1: SyntaxError" in typo, typo
    missing = said("plugins=[not_there]")
    assert "no module 'not_there' in the working directory" in missing, missing
    twice = said("plugins=[first,second]")
    assert re.search(r"'net' is registered twice: by first at .*first\.py:5, and by second at .*second\.py:5",
                     twice), twice
    unknown = said("plugins=[shapes]", "model.name=nope")
    assert "model.name='nope' is not a known model" in unknown and "mlp, cnn" in unknown
    assert "ten_inputs (from shapes)" in unknown, unknown
    wide = said("plugins=[shapes]", "model=ten_inputs")
    assert "model=ten_inputs does not take data=synthetic_regression's samples (shape [1])" in wide, wide
    narrow = said("plugins=[shapes]", "model=three_outputs")
    assert "gives outputs of shape ['batch', 3]" in narrow and "the task needs ['batch', 1]" in narrow, narrow
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_an_installed_package_registers_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    (site / "tkplug-0.1.dist-info").mkdir(parents=True)
    (site / "tkplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tkplug\nVersion: 0.1\n")
    (site / "tkplug-0.1.dist-info" / "entry_points.txt").write_text("[trainkit.plugins]\ntkplug = tkplug_nets\n")
    (site / "tkplug_nets.py").write_text(MARKED.replace('Path("imported.marker")', 'Path("ep.marker")')
                                         .replace("marked_net", "entry_net"))
    env = {"PYTHONPATH": str(site)}
    listed = run_cli("list", cwd=tmp_path, env=env).stdout
    assert re.search(r"entry_net\s+plugin tkplug_nets\s+tkplug_nets\.MarkedNet", listed), listed
    assert "tkplug_nets (entry point tkplug of tkplug)" in listed


def test_a_registered_name_without_a_yaml_file_is_a_config_option(tmp_path):
    write_readme_files(tmp_path)
    job = run_cli("train", "plugins=[my_project.nets]", "model=resmlp", "model.width=8", "data=spirals",
                  "scheduler=ExponentialLR", "scheduler.gamma=0.5", "--cfg", "job", cwd=tmp_path).stdout
    assert "name: resmlp\n  width: 8\n  blocks: 2\n" in job, job
    assert "name: spirals\n  'n': 1200\n  noise: 0.15\n  turns: 1.5\n" in job
    assert "name: ExponentialLR\n  gamma: 0.5\n" in job
