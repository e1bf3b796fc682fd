"""The speed switches and the overhead fixes change how fast a run goes, never what it computes.

Behaviour only: no timings here (benchmarks/run.py measures them on real data).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainkit.build import build_optimization, build_run
from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import Augment, BatchLoader
from trainkit.engine.loop import FitState, Hooks, MeanAccumulator, fit
from trainkit.errors import ConfigError

CPU = torch.device("cpu")


class Quiet:
    start_epoch = step = end_epoch = images = close = lambda *a: None


def train(cfg) -> tuple[dict[str, float], object]:
    """Two short epochs of the composed config in-process; the last epoch's metrics and the built run."""
    torch.manual_seed(0)
    built = build_run(cfg)
    opt = build_optimization(cfg, built.task, built.settings, built.device, len(built.loaders["train"]))
    state = FitState()
    fit(built.task, built.loaders["train"], built.loaders["val"], opt, Quiet(), built.settings,
        Hooks(save_epoch=lambda m: None, save_step=lambda: None), state)
    return state.history[-1], built


def first_step(cfg) -> list[torch.Tensor]:
    """The loss of the first training batch and the gradients it gives every weight, from the seeded start."""
    torch.manual_seed(0)
    built = build_run(cfg)
    x, y = next(iter(built.loaders["train"]))
    loss = torch.nn.functional.cross_entropy(built.task.net(x), y)
    loss.backward()
    return [loss.detach()] + [p.grad for p in built.task.net.parameters()]


def same_metrics(a: dict[str, float], b: dict[str, float], tol: float) -> None:
    for k in a:
        if k.startswith(("train/", "val/")) and k != "train/samples_per_s":
            assert b[k] == pytest.approx(a[k], rel=tol, abs=tol), k


@pytest.fixture
def matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_channels_last_trains_the_same_cnn(compose, cifar_root):
    args = ["model=cnn", "data=cifar10", f"data.root={cifar_root}", "trainer.max_epochs=2", "data.batch_size=32"]
    # One step computes the same loss and gradients up to float rounding ...
    plain_step, fast_step = first_step(compose(*args)), first_step(compose(*args, "trainer.channels_last=true"))
    for a, b in zip(plain_step, fast_step):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # ... and two epochs of it stay together: the convolutions sum in another order in the channels-last layout, and
    # that rounding grows over 18 steps to about 5e-4 of the loss on some machines, so the whole run is compared looser.
    plain, _ = train(compose(*args))
    fast, built = train(compose(*args, "trainer.channels_last=true"))
    same_metrics(plain, fast, 3e-3)
    conv = built.task.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = next(iter(built.loaders["train"]))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32


def test_compile_trains_the_same_and_checkpoints_stay_plain(compose):
    args = ["trainer.max_epochs=2", "model.hidden=[16]", "data.n_train=256", "data.n_val=64"]
    plain, _ = train(compose(*args))
    try:
        compiled, built = train(compose(*args, "trainer.compile=true"))
    finally:
        torch._dynamo.reset()
    same_metrics(plain, compiled, 1e-4)
    net = built.task.net
    assert net._compiled_call_impl is not None  # the forward really went through torch.compile
    assert all("_orig_mod" not in k for k in net.state_dict())  # checkpoints load into a plain module


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_shipped_optimizers_are_fused_and_train_as_torchs_default(compose, name):
    """fused=true (torch's one-kernel update) made Adam's step 2.5× faster on the CPU (benchmarks/README.md);
    it must change the speed, not the training."""
    args = [f"optimizer={name}", "trainer.max_epochs=2", "model.hidden=[16]", "data.n_train=256", "data.n_val=64"]
    fused, built = train(compose(*args))
    plain, plain_built = train(compose(*args, "optimizer.fused=false"))
    same_metrics(plain, fused, 1e-4)
    opt = build_optimization(compose(*args), built.task, built.settings, CPU, 1).optimizers["main"]
    assert opt.param_groups[0]["fused"] is True
    assert build_optimization(compose(*args, "optimizer.fused=false"), plain_built.task, plain_built.settings, CPU,
                              1).optimizers["main"].param_groups[0]["fused"] is False


def test_matmul_precision_is_applied_and_checked(compose, matmul_precision):
    build_run(compose("trainer.matmul_precision=high"))
    assert torch.get_float32_matmul_precision() == "high"
    with pytest.raises(ConfigError, match="trainer.matmul_precision='fast'"):
        build_run(compose("trainer.matmul_precision=fast"))


def test_loader_batches_match_the_unfused_recipe():
    """Augmenting the uint8 pixels, then one multiply-add, gives the batches of float-then-augment-then-normalize."""
    x = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    meta = DataMeta("t", "classification", (3, 8, 8), 10, scale=255.0, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    augment = Augment(crop_padding=2, hflip=True)
    loader = BatchLoader(Split(x, torch.arange(300)), meta, 64, CPU, shuffle=True, seed=1, augment=augment)
    loader.set_epoch(3)
    mean, std = torch.tensor(meta.mean).view(1, -1, 1, 1), torch.tensor(meta.std).view(1, -1, 1, 1)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1 * 1_000_003 + 3))
    g = torch.Generator()
    for b, (xb, yb) in enumerate(loader):
        idx = order[b * 64:(b + 1) * 64]
        g.manual_seed((1 * 1_000_003 + 3) * 100_003 + b)
        expected = (augment(x[idx].float() / 255, g) - mean) / std
        assert torch.equal(yb, idx) and torch.allclose(xb, expected, atol=1e-5)


def test_loader_never_writes_into_float_splits():
    x = torch.randn(50, 4)
    kept = x.clone()
    meta = DataMeta("r", "regression", (4,), 1, scale=2.0)
    assert all(torch.allclose(b, x[i * 10:(i + 1) * 10] / 2) for i, (b, _) in enumerate(
        BatchLoader(Split(x, torch.zeros(50)), meta, 10, CPU)))
    assert torch.equal(x, kept)


def test_mean_accumulator_queues_and_resumes_bitwise():
    g = torch.Generator().manual_seed(0)
    values = [({"loss": torch.rand((), generator=g), "acc": torch.rand((), generator=g)}, 32 if i % 7 else 5)
              for i in range(150)]
    whole = MeanAccumulator()
    for i, (v, n) in enumerate(values):
        whole.add(v, n, i + 1)
    expected = {k: sum(float(v[k]) * n for v, n in values) / sum(n for _, n in values) for k in ("loss", "acc")}
    assert whole.compute() == pytest.approx(expected, rel=1e-6)
    resumed = MeanAccumulator()
    for i, (v, n) in enumerate(values[:90]):  # stop mid-queue, carry the state over, go on
        resumed.add(v, n, i + 1)
    state = resumed.state_dict()
    resumed = MeanAccumulator(state["sums"], state["count"], state["pending"])
    for i, (v, n) in enumerate(values[90:], start=90):
        resumed.add(v, n, i + 1)
    assert resumed.compute() == whole.compute()  # the same groups summed in the same order
    assert int(whole.first_bad) == -1


def test_mean_accumulator_names_the_first_non_finite_step_across_flushes():
    acc = MeanAccumulator()
    for step in range(1, 200):
        acc.add({"loss": torch.tensor(float("nan") if step in (77, 150) else 1.0)}, 8, step)
    assert int(acc.first_bad) == 77


def test_train_command_does_not_import_torchvision():
    """torchvision is slow to import: 0.4 s at the start of every run that saves no images."""
    code = "import sys, trainkit.commands.train; assert 'torchvision' not in sys.modules, 'torchvision imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mean_accumulator_takes_per_sample_values_beside_batch_means():
    """Classification returns `pred == y` per sample (no per-step reduction): the means must be those of the
    samples, over batches of any size, and survive a resume mid-queue."""
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(n, generator=g) < 0.7 for n in [128] * 70 + [17]]  # a short last batch
    acc = MeanAccumulator()
    for i, correct in enumerate(batches[:40]):
        acc.add({"acc": correct, "loss": torch.tensor(float(i))}, len(correct), i + 1)
    state = acc.state_dict()
    acc = MeanAccumulator(state["sums"], state["count"], state["pending"])
    for i, correct in enumerate(batches[40:], 40):
        acc.add({"acc": correct, "loss": torch.tensor(float(i))}, len(correct), i + 1)
    every = torch.cat(batches)
    weights = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    means = acc.compute("train/")
    assert means["train/acc"] == pytest.approx(every.double().mean().item(), abs=1e-7)
    assert means["train/loss"] == pytest.approx((torch.arange(71.0, dtype=torch.float64) @ weights / weights.sum()).item())
    assert acc.first_bad is not None and int(acc.first_bad) == -1


FAULTS = """
import ctypes, resource, torch
from trainkit.engine.device import resolve_device

def faults_per_step():  # a training step's pattern: blocks of activations allocated, then all freed
    def step():
        blocks = [torch.ones(10 << 18) for _ in range(8)]  # 8 blocks of 10 MB
        del blocks
    step(); step()  # the heap grows to hold them
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

mallopt = ctypes.CDLL(None).mallopt
mallopt(-3, 128 << 10); mallopt(-1, 128 << 10)  # glibc's own start values: each block mapped and unmapped
print(faults_per_step())
resolve_device("cpu")
print(faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(__import__("ctypes").CDLL(None), "mallopt"),
                    reason="glibc's malloc only")
def test_cpu_training_keeps_freed_host_memory_instead_of_faulting_it_back_at_every_step():
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout.split()
    handed_back, kept = map(float, out)
    assert handed_back > 10_000, "80 MB of blocks handed back to the kernel are faulted in again: 20,480 pages"
    assert kept < 100, f"{kept} page faults a step after resolve_device('cpu'): freed blocks are not reused"
