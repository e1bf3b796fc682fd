"""model=torchvision: torchvision's classification architectures sized from the data, pretrained weights through
torchvision's own download (offline: a clear error), and the whole life of a run through the real CLI."""

from __future__ import annotations

import json
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli, run_dirs
from factories import write_mnist_csv
from test_after_training import command
from torchvision import models

from trainkit.engine import checkpoint
from trainkit.errors import ConfigError
from trainkit.models.torchvision import NO_AUX, TorchvisionNet, architectures

# One of each family: plain and grouped convolutions, VGG/AlexNet's Sequential classifier, inverted residuals, dense
# blocks, squeezenet's convolutional head, attention (ViT's heads.head, Swin, MaxViT), regnet, inception's tuple.
FAMILIES = ["resnet18", "alexnet", "vgg11", "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "densenet121",
            "squeezenet1_0", "vit_b_32", "swin_t", "maxvit_t", "regnet_x_400mf", "inception_v3", "googlenet"]


def on_meta(net: torch.nn.Module, *shape: int) -> torch.Size:
    """The output shape of a batch of two through `net`, built on the meta device (no memory, no time)."""
    with torch.device("meta"), torch.no_grad():
        return net.eval()(torch.empty(2, *shape)).shape


@pytest.mark.parametrize("arch,shape", [("resnet18", (1, 28, 28)), ("squeezenet1_1", (3, 32, 32))])
def test_real_networks_are_sized_from_the_data(arch, shape):
    net = TorchvisionNet(shape, 7, arch=arch)
    out = net(torch.randn(3, *shape))
    assert out.shape == (3, 7) and out.isfinite().all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_every_family_takes_grey_and_colour_images_on_the_meta_device():
    with torch.device("meta"):
        for i, arch in enumerate(FAMILIES):
            shape = (1, 96, 96) if i % 2 else (3, 80, 112)
            resize = [224, 224] if arch in ("vit_b_32", "maxvit_t") else None  # they take 224×224 only
            net = TorchvisionNet(shape, 5, arch=arch, resize=resize)
            assert on_meta(net, *shape) == (2, 5), arch
            if arch in NO_AUX:  # scripted, they return (logits, aux...) whatever aux_logits says: export takes one
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    assert on_meta(torch.jit.script(net), *shape) == (2, 5), arch


def test_pretrained_weights_get_a_head_for_the_data_in_every_family(tmp_path, monkeypatch):
    """The weights' 1000-class layer is found (the last Linear, or squeezenet's 1×1 convolution) and replaced; the
    auxiliary heads of inception and googlenet go. On the meta device, from weight files of meta tensors placed in
    the cache (no download, no memory)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    with torch.device("meta"):
        for arch in FAMILIES:
            weights = models.get_model_weights(arch).DEFAULT
            if arch == "regnet_x_400mf":  # regnet reads tensor values while it is built: on the CPU, then to meta
                with torch.device("cpu"):
                    pretrained = models.get_model(arch).to("meta").state_dict()
            else:  # inception's and googlenet's files hold their auxiliary heads too
                pretrained = models.get_model(arch, **({"init_weights": True} if arch in NO_AUX else {})).state_dict()
            torch.save(pretrained, tmp_path / "hub" / "checkpoints" / Path(weights.url).name)
            size = weights.meta["min_size"][0] if arch in ("vit_b_32", "maxvit_t") else 96
            net = TorchvisionNet((3, size, size), 3, arch=arch, weights="DEFAULT")
            assert on_meta(net, 3, size, size) == (2, 3), arch
            assert not any(name.startswith(("AuxLogits", "aux1", "aux2")) for name, _ in net.net.named_modules()), arch


@pytest.mark.slow
def test_every_classification_architecture_of_torchvision_builds_and_runs():
    """All of torchvision.models.list_models(module=torchvision.models), on the meta device (a bonus: ~30 s)."""
    assert len(architectures()) >= 80
    with torch.device("meta"):
        for arch in architectures():
            net = TorchvisionNet((1, 224, 224), 4, arch=arch)
            assert on_meta(net, 1, 224, 224) == (2, 4), arch


def test_images_too_small_name_both_shapes_and_the_resize_that_fits():
    with torch.device("meta"):
        with pytest.raises(ValueError, match=r"alexnet does not take the data's 32×32 images \(samples of shape "
                                             r"\[3, 32, 32\].*64×64: set model.resize=\[64,64\]"):
            TorchvisionNet((3, 32, 32), 10, arch="alexnet")
        assert on_meta(TorchvisionNet((3, 32, 32), 10, arch="alexnet", resize=[64, 64]), 3, 32, 32) == (2, 10)
        with pytest.raises(ValueError, match=r"vit_b_16 does not take model.resize=\[64, 64\].*Expected 224.*"
                                             r"model.resize=\[224,224\]"):
            TorchvisionNet((1, 28, 28), 10, arch="vit_b_16", resize=[64, 64])


def test_errors_name_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"model.arch=resnet81 is not one of torchvision .*Did you mean resnet18.*"
                                         r"`trainkit list` names them all"):
        TorchvisionNet((3, 32, 32), 10, arch="resnet81")
    with pytest.raises(ConfigError, match=r"fasterrcnn_resnet50_fpn is a detection model.*classification"):
        TorchvisionNet((3, 32, 32), 10, arch="fasterrcnn_resnet50_fpn")
    with pytest.raises(ConfigError, match=r"model.weights=IMAGENET22K is not .* DEFAULT \(= IMAGENET1K_V1\), "
                                         r"IMAGENET1K_V1; or model.weights=null"):
        TorchvisionNet((3, 32, 32), 10, weights="IMAGENET22K")
    with pytest.raises(ConfigError, match=r"model.resize=\[64\] must be \[height, width\]"):
        TorchvisionNet((3, 32, 32), 10, resize=[64])
    for shape in [(784,), (4, 32, 32)]:
        with pytest.raises(ValueError, match=r"needs 1- or 3-channel images"):
            TorchvisionNet(shape, 10)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty torch hub cache, and no way out: a proxy on a closed local port refuses every download at once
    (this machine has no network anyway; one with network is made offline the same way)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    yield home / "hub" / "checkpoints"
    # urllib builds its global opener, with the proxies of the moment, on first use: forget this test's dead proxy.
    urllib.request.install_opener(None)


def test_offline_pretrained_weights_are_a_clear_error_at_once(torch_home, compose, mnist_files):
    start = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        TorchvisionNet((3, 32, 32), 10, arch="resnet18", weights="DEFAULT")
    assert time.monotonic() - start < 10, "offline must fail fast, not after a network timeout"
    said = str(caught.value)
    for part in ("model.weights=DEFAULT", "ResNet18_Weights.IMAGENET1K_V1", "no network", str(torch_home),
                 "resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                 "model.weights=null"):
        assert part in said, part
    assert "\n" not in said
    assert not any(torch_home.glob("*.pth")), "nothing half-downloaded is left in the cache"
    # Through build, as `trainkit train` builds it: the same error, unwrapped; a restored checkpoint fetches nothing.
    from trainkit.build import build_data, build_task

    cfg = compose("model=torchvision", "model.arch=squeezenet1_1", "model.weights=DEFAULT", "data=mnist_csv",
                  f"data.train_csv={mnist_files['kaggle_train']}")
    meta = build_data(cfg).meta
    with pytest.raises(ConfigError, match=r"^model.weights=DEFAULT for model.arch=squeezenet1_1 .*no network"):
        build_task(cfg, meta)
    assert build_task(cfg, meta, restoring=True).net.net.classifier[1].out_channels == 10
    # A resumed run's weights come from its checkpoint: building it fetches nothing either.
    from trainkit.build import build_run

    assert build_run(cfg, restoring=True).task.net.net.classifier[1].out_channels == 10


@pytest.mark.parametrize("arch,head,name", [("mobilenet_v3_small", "classifier.3", "DEFAULT"),
                                             ("squeezenet1_1", "classifier.1", "SqueezeNet1_1_Weights.IMAGENET1K_V1")])
def test_weights_placed_in_the_cache_by_hand_are_loaded_with_a_new_head(torch_home, arch, head, name):
    """What the offline error tells a user to do: the file in torch.hub.get_dir()/checkpoints is used as it is."""
    weights = models.get_model_weights(arch).DEFAULT
    pretrained = models.get_model(arch).state_dict()  # stands in for the ImageNet file: same names and shapes
    torch_home.mkdir(parents=True)
    torch.save(pretrained, torch_home / Path(weights.url).name)
    net = TorchvisionNet((1, 28, 28), 10, arch=arch, weights=name)
    mine = net.net.state_dict()
    kept = [k for k in pretrained if not k.startswith(head + ".")]
    assert kept and all(torch.equal(mine[k], pretrained[k]) for k in kept)
    assert mine[f"{head}.weight"].shape[0] == 10 and pretrained[f"{head}.weight"].shape[0] == 1000
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match="model.weights=ResNet18_Weights.DEFAULT is not a set of weights of"):
        TorchvisionNet((1, 28, 28), 10, arch=arch, weights="ResNet18_Weights.DEFAULT")


# --- the whole life of a run through the CLI ---------------------------------------------------------------------

QUIET = ["trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """resnet18 trained one epoch on tiny MNIST CSVs by the real CLI with trainer.devices=2 (DDP, gloo)."""
    root = tmp_path_factory.mktemp("tv")
    write_mnist_csv(root / "train.csv", n=64, seed=0)
    write_mnist_csv(root / "test.csv", n=32, seed=1)
    recipe = ["model=torchvision", "model.arch=resnet18", "data=mnist_csv", f"data.train_csv={root / 'train.csv'}",
              f"data.test_csv={root / 'test.csv'}", "data.batch_size=16"]
    out = run_cli("train", *recipe, "trainer.max_epochs=1", "trainer.devices=2", *FAST, *QUIET[1:], cwd=root).stdout
    threads = torch.get_num_threads()
    yield {"root": root, "recipe": recipe, "stdout": out, "run": run_dirs(root)}
    torch.set_num_threads(threads)  # the in-process commands below set it for the whole process


def test_resnet18_trains_with_ddp_then_evaluates_predicts_exports_and_resumes(ddp_run):
    root, (run,) = ddp_run["root"], ddp_run["run"]
    assert "global batch 2 × 16 = 32" in ddp_run["stdout"]
    summary = json.loads((run / "summary.json").read_text())
    ckpt = run / "checkpoints" / "best.ckpt"
    state = checkpoint.load(ckpt)["modules"]["net"]
    assert state["net.conv1.weight"].shape == (64, 3, 7, 7) and state["net.fc.weight"].shape == (10, 512)

    result, _ = command("eval", f"ckpt={ckpt}", *QUIET, run_dir=root / "eval")
    assert result["samples"] == 32
    assert result["metrics"]["test/acc"] == pytest.approx(summary["test"]["test/acc"])
    result, _ = command("predict", f"ckpt={ckpt}", f"input={root / 'test.csv'}", *QUIET, run_dir=root / "predict")
    assert result["rows"] == 32 and result["accuracy"] == pytest.approx(summary["test"]["test/acc"])
    for fmt in ("torchscript", "torch_export", "onnx"):
        result, out = command("export", f"ckpt={ckpt}", f"format={fmt}", run_dir=root / fmt)
        assert "matches trainkit" in out and result["max_abs_difference"] <= 1e-4, out
        assert Path(result["file"]).is_file() and result["model"] == "torchvision"

    result, _ = command("train", *ddp_run["recipe"], "trainer.max_epochs=2", f"resume={run}", *QUIET,
                        run_dir=root / "resumed")
    assert result["epochs"] == 2 and Path(result["run_dir"]) == run
    assert checkpoint.load(run / "checkpoints" / "last.ckpt")["fit"]["epoch"] == 2
