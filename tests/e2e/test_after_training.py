"""After training: eval reports, predict, export (loaded in a Python that cannot import trainkit) and sample.

One tiny checkpoint per model kind is trained once for the module, in this process, through the same command
table and config composition as the CLI; one test runs the real `trainkit predict` in a subprocess.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from factories import CIFAR_NAMES, cifar_images, mnist_images, write_cifar10, write_mnist_csv
from PIL import Image

QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1"]  # 1 thread: 5× faster on a busy 2-core box


def command(name: str, *args: str, run_dir: Path) -> tuple[dict, str]:
    """`trainkit NAME ARGS` in this process: the CLI's command table, its recipe `++` rule and the shipped
    configs, with the command's output captured. Returns (its result, what it printed)."""
    from hydra import compose, initialize_config_dir
    from rich.console import Console

    from trainkit.cli.compose import config_dir, register_schemas
    from trainkit.cli.table import COMMANDS, load_target
    from trainkit.commands import Context

    cmd = COMMANDS[name]
    if cmd.open_roots:
        args = tuple(f"++{a}" if a.startswith(cmd.open_roots) else a for a in args)
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=cmd.config, overrides=list(args))
    run_dir.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, soft_wrap=True)
    result = load_target(cmd.target)(cfg, Context(run_dir, console=console, errors=console))
    return result, out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Data in the real formats and one trained checkpoint per model kind: name → best.ckpt."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("after")
    files = {"train": root / "train.csv", "test": root / "test.csv", "kaggle_test": root / "kaggle_test.csv",
             "noise": root / "noise.csv"}
    write_mnist_csv(files["train"], n=300, seed=0)
    write_mnist_csv(files["test"], n=100, seed=1)
    write_mnist_csv(files["kaggle_test"], n=40, layout="kaggle_test", seed=2)
    write_mnist_csv(files["noise"], n=60, seed=3, learnable=False)  # a classifier gets most of these wrong
    write_cifar10(root / "cifar", n_per_batch=200)
    mnist = ["data=mnist_csv", f"data.train_csv={files['train']}", f"data.test_csv={files['test']}", "data.batch_size=32"]
    recipes = {
        "cnn": ["model=cnn", "trainer.max_epochs=2", *mnist],
        "gan": ["model=gan", "model.g_hidden=[64]", "model.d_hidden=[64]", "trainer.max_epochs=1", *mnist],
        "reg": ["trainer.max_epochs=4", "data.n_train=512", "data.n_val=128", "data.n_test=256"],
        "gan_points": ["model=gan", "model.g_hidden=[32]", "model.d_hidden=[32]", "trainer.max_epochs=1",
                       "data.n_train=256", "data.n_val=128", "data.n_test=128"],
        "cifar": ["model=cnn", "data=cifar10", f"data.root={root / 'cifar'}", "data.batch_size=32", "trainer.max_epochs=1"],
    }
    ckpts = {}
    for name, args in recipes.items():
        command("train", *args, *QUIET, run_dir=root / "train" / name)
        ckpts[name] = root / "train" / name / "checkpoints" / "best.ckpt"
    yield {"root": root, "files": files, "ckpt": ckpts}
    torch.set_num_threads(threads)  # the runs above set it for the whole process


def own_outputs(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    """trainkit's own outputs for raw inputs: the batch loader normalizes, the task predicts (as eval does)."""
    from trainkit.data.base import Split
    from trainkit.data.loader import BatchLoader
    from trainkit.restore import restore

    restored = restore(ckpt)
    loader = BatchLoader(Split(x, torch.zeros(len(x))), restored.meta, len(x), torch.device("cpu"))
    (normalized, _), = list(loader)
    with torch.inference_mode():
        return restored.task.outputs(normalized)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- eval ---------------------------------------------------------------------------------------------------


def test_eval_classification_report(runs, tmp_path):
    """Per-class accuracy, a confusion matrix consistent with test/acc, the most confident mistakes first, PNGs
    in the run dir and in TensorBoard; the old metrics.json keys stay. Noise images guarantee mistakes."""
    result, out = command("eval", f"ckpt={runs['ckpt']['cnn']}", f"data.test_csv={runs['files']['noise']}",
                          "trainer.tensorboard=true", "eval.misclassified=8", run_dir=tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"checkpoint", "epoch", "split", "samples", "metrics"} <= set(saved) and saved["samples"] == 60
    report = saved["report"]
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 60
    assert matrix.trace().item() / 60 == pytest.approx(saved["metrics"]["test/acc"], abs=1e-6)
    assert report["class_names"] == [str(i) for i in range(10)]
    assert [row["samples"] for row in report["per_class"]] == matrix.sum(1).tolist()
    mistakes = report["misclassified"]
    assert len(mistakes) == min(8, report["errors"]) > 0
    assert all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes), reverse=True)
    for name in ("confusion_matrix", "misclassified"):
        assert Image.open(tmp_path / f"{name}.png").size[0] > 100
    assert "test accuracy per class" in out and "confusion matrix:" in out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/misclassified"} <= set(events.Tags()["images"])
    assert "test/acc" in events.Tags()["scalars"]


def test_eval_uses_cifar_class_names(runs, tmp_path):
    result, out = command("eval", f"ckpt={runs['ckpt']['cifar']}", run_dir=tmp_path)
    assert result["report"]["class_names"] == CIFAR_NAMES
    assert "automobile" in out and (tmp_path / "confusion_matrix.png").is_file()


def test_eval_regression_report(runs, tmp_path):
    """MSE equals the loss, R² = 1 − MSE / Var(y) on the very test targets, and both plots are written."""
    from trainkit.data.synthetic import load

    result, _ = command("eval", f"ckpt={runs['ckpt']['reg']}", run_dir=tmp_path)
    m = result["metrics"]
    assert m["test/mse"] == pytest.approx(m["test/loss"], rel=1e-5)
    y = load(n_train=512, n_val=128, n_test=256).test.y.double()
    assert m["test/r2"] == pytest.approx(1 - m["test/mse"] / y.var(unbiased=False).item(), abs=1e-4)
    assert result["report"]["r2"] == m["test/r2"] and m["test/rmse"] == pytest.approx(m["test/mse"] ** 0.5)
    assert (tmp_path / "predictions.png").is_file() and (tmp_path / "fit.png").is_file()


def test_eval_gan_with_feature_classifier(runs, tmp_path):
    """Fréchet distance in the classifier's feature space, its real-vs-real floor, and the generated classes."""
    result, out = command("eval", f"ckpt={runs['ckpt']['gan']}", f"eval.feature_ckpt={runs['ckpt']['cnn']}",
                          "eval.samples=16", run_dir=tmp_path)
    m, report = result["metrics"], result["report"]
    assert 0 <= m["test/fd_train"] < m["test/fd"], "a one-epoch GAN is farther from the data than real images are"
    assert sum(report["generated_class_histogram"].values()) == report["generated"] == 100
    assert 0 < m["test/gen_confidence"] <= 1 and report["samples_shown"] == 16
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "generated_classes.png").is_file()

    _, out = command("eval", f"ckpt={runs['ckpt']['gan']}", run_dir=tmp_path / "plain")
    assert "eval.feature_ckpt=PATH" in out and "test/fd" not in out


def test_eval_gan_feature_ckpt_must_be_a_classifier_of_the_same_data(runs, tmp_path):
    from trainkit.errors import UserError

    with pytest.raises(UserError, match="trained on data=synthetic_regression, this GAN on data=mnist_csv"):
        command("eval", f"ckpt={runs['ckpt']['gan']}", f"eval.feature_ckpt={runs['ckpt']['reg']}", run_dir=tmp_path)


def test_eval_gan_on_points(runs, tmp_path):
    result, _ = command("eval", f"ckpt={runs['ckpt']['gan_points']}", run_dir=tmp_path)
    m = result["metrics"]
    assert 0 <= m["test/energy_train"] < m["test/energy"] and "test/mmd" in m
    assert (tmp_path / "points.png").is_file()


# --- predict ------------------------------------------------------------------------------------------------


def test_predict_kaggle_submission_through_the_cli(runs, tmp_path):
    """The real command: a Kaggle test.csv (no label column) becomes ImageId,Label with ids 1..N in input
    order and trainkit's own predictions; the output lands in outputs/predict/<date>/<time>/."""
    proc = run_cli("predict", f"ckpt={runs['ckpt']['cnn']}", f"input={runs['files']['kaggle_test']}", cwd=tmp_path)
    (submission,) = (tmp_path / "outputs" / "predict").glob("*/*/submission.csv")
    assert f"wrote 40 predictions to {submission.relative_to(tmp_path)}" in proc.stdout
    assert submission.read_text().splitlines()[0] == "ImageId,Label"
    rows = read_csv(submission)
    x, _ = mnist_images(40, seed=2)
    expected = own_outputs(runs["ckpt"]["cnn"], torch.from_numpy(x).unsqueeze(1)).argmax(1).tolist()
    assert [int(r["ImageId"]) for r in rows] == list(range(1, 41))
    assert [int(r["Label"]) for r in rows] == expected


def test_predict_labeled_csv_prints_accuracy(runs, tmp_path):
    (tmp_path / "sub").mkdir()  # output= an existing folder: the default file name inside it
    result, out = command("predict", f"ckpt={runs['ckpt']['cnn']}", f"input={runs['files']['test']}",
                          f"output={tmp_path / 'sub'}", run_dir=tmp_path / "run")
    assert Path(result["output"]) == tmp_path / "sub" / "submission.csv" and "accuracy against the labels" in out
    assert result["accuracy"] > 0.5


def test_predict_image_folder_and_index_csv(runs, tmp_path):
    """PNG files (nested folders, an index CSV of relative names) get the same labels as the same pixels in a
    CSV, with the softmax confidence; CIFAR-10 images get CIFAR-10 names."""
    x, _ = mnist_images(12, seed=4)
    folder = tmp_path / "digits"
    for i, image in enumerate(x):
        (folder / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"part{i % 2}" / f"{i:02d}.png")
    result, out = command("predict", f"ckpt={runs['ckpt']['cnn']}", f"input={folder}", "batch_size=5",
                          run_dir=tmp_path / "a")
    rows = read_csv(Path(result["output"]))
    logits = own_outputs(runs["ckpt"]["cnn"], torch.from_numpy(x).unsqueeze(1))
    probs = torch.softmax(logits, 1)
    by_name = {r["filename"]: r for r in rows}
    assert len(rows) == 12 and "part1/03.png" in by_name
    for i in range(12):
        row = by_name[f"part{i % 2}/{i:02d}.png"]
        assert row["label"] == str(int(logits[i].argmax()))
        assert float(row["confidence"]) == pytest.approx(probs[i].max().item(), abs=1e-4)

    index = tmp_path / "index.csv"
    index.write_text("id,filename\n1,digits/part1/03.png\n2,digits/part0/00.png\n")
    result, _ = command("predict", f"ckpt={runs['ckpt']['cnn']}", f"input={index}", run_dir=tmp_path / "b")
    rows = read_csv(Path(result["output"]))
    assert [r["filename"] for r in rows] == ["digits/part1/03.png", "digits/part0/00.png"]
    assert [r["label"] for r in rows] == [by_name["part1/03.png"]["label"], by_name["part0/00.png"]["label"]]
    (folder / "ids.csv").write_text("id,label\npart0/04,4\n")  # the training index layout: an id means <id>.png
    result, _ = command("predict", f"ckpt={runs['ckpt']['cnn']}", f"input={folder / 'ids.csv'}", run_dir=tmp_path / "d")
    assert read_csv(Path(result["output"])) == [{**by_name["part0/04.png"], "filename": "part0/04"}]

    data, labels = cifar_images(4, seed=9)
    for i, flat in enumerate(data):
        Image.fromarray(flat.reshape(3, 32, 32).transpose(1, 2, 0)).save(tmp_path / f"c{i}.png")
    result, _ = command("predict", f"ckpt={runs['ckpt']['cifar']}", f"input={tmp_path / 'c0.png'}", run_dir=tmp_path / "c")
    (row,) = read_csv(Path(result["output"]))
    assert row["filename"] == "c0.png" and row["label"] in CIFAR_NAMES


def test_predict_regression_values(runs, tmp_path):
    values = tmp_path / "x.csv"
    values.write_text("x\n-1.5\n0\n0.25\n2\n")
    result, _ = command("predict", f"ckpt={runs['ckpt']['reg']}", f"input={values}", run_dir=tmp_path)
    rows = read_csv(Path(result["output"]))
    expected = own_outputs(runs["ckpt"]["reg"], torch.tensor([[-1.5], [0.0], [0.25], [2.0]]))[:, 0].tolist()
    assert [r["x"] for r in rows] == ["-1.5", "0", "0.25", "2"]
    assert [float(r["prediction"]) for r in rows] == pytest.approx(expected, abs=1e-6)


def test_predict_errors_name_the_input_and_the_fix(runs, tmp_path):
    from trainkit.errors import UserError

    Image.fromarray(np.zeros((20, 28), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "bad.csv").write_text("x\n1\noops\n")
    cases = [
        ("cnn", tmp_path / "small.png", "small.png is 20×28 pixels, expected 28×28"),
        ("cnn", tmp_path / "missing", "input=" + str(tmp_path / "missing") + " does not exist"),
        ("reg", tmp_path / "bad.csv", "line 3 is 'oops'"),
        ("gan", runs["files"]["kaggle_test"], "trainkit sample ckpt="),
    ]
    for model, path, message in cases:
        with pytest.raises(UserError, match=message):
            command("predict", f"ckpt={runs['ckpt'][model]}", f"input={path}", run_dir=tmp_path / "run")


# --- export -------------------------------------------------------------------------------------------------

NO_TRAINKIT = r"""
import importlib.abc, json, sys

class NoTrainkit(importlib.abc.MetaPathFinder):  # the venv has trainkit installed: hide it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "trainkit":
            raise ModuleNotFoundError("trainkit is not importable here")

sys.meta_path.insert(0, NoTrainkit())
try:
    import trainkit
    raise SystemExit("trainkit is importable: the test would prove nothing")
except ModuleNotFoundError:
    pass
import numpy as np

for job in json.load(open(sys.argv[1])):
    x = np.load(job["input"])
    if job["format"] == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(job["file"], providers=["CPUExecutionProvider"])
        y = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        import torch
        model = torch.jit.load(job["file"]) if job["format"] == "torchscript" else torch.export.load(job["file"]).module()
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy()
    np.save(job["output"], y)
assert not any(m.split(".")[0] == "trainkit" for m in sys.modules)
print("ok")
"""


HAS_ONNX = all(importlib.util.find_spec(p) is not None for p in ("onnx", "onnxscript", "onnxruntime"))


def run_without_trainkit(jobs: dict[str, dict], tmp_path: Path) -> dict[str, torch.Tensor]:
    """Each job's file loaded and run on its input in one fresh `python -I` outside the repository, trainkit
    hidden; returns job name → output."""
    for name, job in jobs.items():
        np.save(tmp_path / f"{name}.in.npy", job["x"])
        job.update(input=str(tmp_path / f"{name}.in.npy"), output=str(tmp_path / f"{name}.out.npy"))
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([{k: v for k, v in job.items() if k != "x"} for job in jobs.values()]))
    proc = subprocess.run([sys.executable, "-I", "-c", NO_TRAINKIT, str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    return {name: torch.from_numpy(np.load(job["output"])) for name, job in jobs.items()}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Each model kind exported through `trainkit export` and run where trainkit cannot be imported.
    Inputs are raw: pixel values 0..255 (uint8, or float), x values, latent noise."""
    tmp = tmp_path_factory.mktemp("exports")

    def export(model: str, fmt: str) -> str:
        result, out = command("export", f"ckpt={runs['ckpt'][model]}", f"format={fmt}", run_dir=tmp / f"{model}_{fmt}")
        assert "matches trainkit" in out, out  # the command's own reload check
        return result["file"]

    pixels = torch.from_numpy(mnist_images(16, seed=5)[0]).unsqueeze(1)
    inputs = {"pixels": pixels, "x": torch.linspace(-2, 2, 9).unsqueeze(1),
              "z": torch.randn(6, 64, generator=torch.Generator().manual_seed(0))}
    script = export("cnn", "torchscript")
    jobs = {
        "torchscript_uint8": {"format": "torchscript", "file": script, "x": pixels.numpy()},
        "torchscript": {"format": "torchscript", "file": script, "x": pixels.float().numpy()},
        "torch_export": {"format": "torch_export", "file": export("cnn", "torch_export"), "x": pixels.float().numpy()},
        "regression": {"format": "torchscript", "file": export("reg", "torchscript"), "x": inputs["x"].numpy()},
        "gan": {"format": "torch_export", "file": export("gan", "torch_export"), "x": inputs["z"].numpy()},
    }
    if HAS_ONNX:
        jobs["onnx"] = {"format": "onnx", "file": export("cnn", "onnx"), "x": pixels.float().numpy()}
    return {"outputs": run_without_trainkit(jobs, tmp), "files": {k: v["file"] for k, v in jobs.items()}, **inputs}


@pytest.mark.parametrize("job", ["torchscript_uint8", "torchscript", "torch_export"])
def test_exported_classifier_gives_trainkits_class_scores_without_trainkit(runs, exported, job):
    expected = own_outputs(runs["ckpt"]["cnn"], exported["pixels"])
    assert (exported["outputs"][job] - expected).abs().max().item() <= 1e-5


@pytest.mark.skipif(not HAS_ONNX, reason='the optional ONNX extra is not installed (pip install -e ".[onnx]")')
def test_exported_onnx_gives_trainkits_class_scores_without_trainkit(runs, exported):
    difference = (exported["outputs"]["onnx"] - own_outputs(runs["ckpt"]["cnn"], exported["pixels"])).abs().max().item()
    assert difference <= 1e-5, f"ONNX differs from trainkit by {difference}"
    import onnx

    props = {p.key: p.value for p in onnx.load(exported["files"]["onnx"]).metadata_props}
    assert json.loads(props["trainkit.json"])["class_names"] == [str(i) for i in range(10)]


def test_exported_regression_and_generator_without_trainkit(runs, exported):
    """Raw x in, trainkit's predictions out; latent noise in, the generator's images in pixel units out."""
    from trainkit.restore import restore

    expected = own_outputs(runs["ckpt"]["reg"], exported["x"])
    assert (exported["outputs"]["regression"] - expected).abs().max().item() <= 1e-5
    task = restore(runs["ckpt"]["gan"]).task
    with torch.inference_mode():
        pixels = (task.gan(exported["z"]) * task.std + task.mean) * 255
    assert exported["outputs"]["gan"].shape == (6, 1, 28, 28)
    assert (exported["outputs"]["gan"] - pixels).abs().max().item() <= 255 * 1e-5


def test_exported_file_says_what_goes_in_and_out(exported):
    files = {"trainkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        torch.jit.load(exported["files"]["torchscript"], _extra_files=files)
    info = json.loads(files["trainkit.json"])
    assert info["class_names"] == [str(i) for i in range(10)] and info["input"]["shape"] == ["batch", 1, 28, 28]
    assert info["input"]["dtype"] == "float32 or uint8" and "0..255" in info["input"]["values"]


def test_export_onnx_without_the_extra_says_how_to_install_it(runs, tmp_path, monkeypatch):
    from trainkit.commands import export as export_module
    from trainkit.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(UserError, match=r'pip install -e "\.\[onnx\]"'):
        command("export", f"ckpt={runs['ckpt']['cnn']}", "format=onnx", run_dir=tmp_path)


# --- sample -------------------------------------------------------------------------------------------------


def test_sample_grid_is_seeded(runs, tmp_path):
    def sample(*args: str, run: str) -> bytes:
        result, out = command("sample", f"ckpt={runs['ckpt']['gan']}", "n=10", *args, run_dir=tmp_path / run)
        assert "wrote 10 samples" in out
        return Path(result["output"]).read_bytes()

    first, again, other = sample(run="a"), sample(run="b"), sample("seed=1", run="c")
    assert first == again and first != other
    grid = Image.open(tmp_path / "a" / "samples.png")
    assert grid.mode == "RGB" and grid.size[0] > 3 * 84  # 3 per row (√10), each digit enlarged to 84 pixels


def test_sample_points_plot_and_csv(runs, tmp_path):
    result, _ = command("sample", f"ckpt={runs['ckpt']['gan_points']}", "n=25", run_dir=tmp_path)
    assert Image.open(result["output"]).size == (600, 480)
    rows = read_csv(Path(result["points"]))
    assert len(rows) == 25 and set(rows[0]) == {"x", "y"}


def test_sample_refuses_a_classifier(runs, tmp_path):
    from trainkit.errors import UserError

    with pytest.raises(UserError, match="not a GAN"):
        command("sample", f"ckpt={runs['ckpt']['cnn']}", run_dir=tmp_path)


def test_help_lists_the_after_training_commands(capsys):
    from trainkit.cli import main

    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("predict", "export", "sample"))
