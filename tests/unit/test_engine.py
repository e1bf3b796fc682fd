"""Unit tests of the engine: precision, optimization, the loop, checkpoints, and the batch loader."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import Augment, BatchLoader
from trainkit.engine import checkpoint
from trainkit.engine.loop import FitState, Hooks, MeanAccumulator, NonFiniteLossError, evaluate, fit
from trainkit.engine.optimization import Optimization, Precision
from trainkit.engine.settings import TrainerSettings
from trainkit.tasks.classification import ClassificationTask
from trainkit.tasks.gan import GANTask, mmd_rbf
from trainkit.models.gan import GAN

CPU = torch.device("cpu")
META = DataMeta(name="toy", kind="classification", in_shape=(4,), num_outputs=2)
DATA = checkpoint.data_section(META, Split(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)))


def toy_split(n: int = 256, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return Split(x, (x[:, 0] + x[:, 1] > 0).long())


class SilentLogger:
    def __init__(self):
        self.epochs, self.steps, self.logged = [], 0, []

    def start_epoch(self, epoch, num_batches):
        pass

    def step(self, step, metrics):
        self.steps += 1
        if metrics is not None:
            self.logged.append(metrics)

    def end_epoch(self, epoch, step, metrics):
        self.epochs.append((epoch, step, metrics))

    def images(self, epoch, images):
        pass


def make_opt(task, precision="32", lr=0.1, clip=None):
    optimizers = {k: torch.optim.SGD(p, lr=lr) for k, p in task.param_groups().items()}
    return Optimization(optimizers, Precision(precision, CPU), grad_clip=clip)


def run_fit(tmp_path, task, opt, epochs=3, **settings):
    loaders = BatchLoader(toy_split(), META, 32, CPU, shuffle=True), BatchLoader(toy_split(64, 1), META, 64, CPU)
    manager = checkpoint.CheckpointManager(tmp_path / "ckpt", task.monitor, task.monitor_mode)
    logger = SilentLogger()
    settings = TrainerSettings(max_epochs=epochs, log_every_n_steps=4, **settings)
    state = FitState()
    payload = lambda: checkpoint.make_payload("seed: 0\n", task.modules(), opt, state, manager, DATA)  # noqa: E731
    hooks = Hooks(save_epoch=lambda m: manager.save_epoch(payload, m, state.epoch, state.step),
                  save_step=lambda: manager.save_step(payload, state.epoch + 1, state.step))
    fit(task, *loaders, opt, logger, settings, hooks, state)
    return state, logger, manager


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_fit_learns_in_every_precision(tmp_path, precision):
    torch.manual_seed(0)
    task = ClassificationTask(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)), META)
    opt = make_opt(task, precision)
    state, logger, manager = run_fit(tmp_path, task, opt)
    assert state.epoch == 3 and state.step == 3 * 8 and logger.steps == 24
    assert len(logger.logged) == 6  # a host sync only every log_every_n_steps
    assert logger.epochs[-1][2]["val/acc"] > 0.85
    assert manager.best_path.exists() and manager.last_path.exists()
    assert opt.scaler.is_enabled() == (precision == "16-mixed")


def test_bf16_autocast_runs_matmuls_in_bf16_on_cpu():
    with Precision("bf16-mixed", CPU).autocast():
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.bfloat16
    with Precision("32", CPU).autocast():
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.float32


def test_grad_scaler_updates_once_per_iteration_with_two_optimizers():
    """The GAN case: two scaled steps, one scale update (PyTorch AMP notes for several optimizers)."""
    torch.manual_seed(0)
    task = GANTask(GAN((2,), latent_dim=4, g_hidden=(8,), d_hidden=(8,), dropout=0.0),
                   DataMeta(name="toy", kind="regression", in_shape=(1,), num_outputs=1))
    opt = make_opt(task, "16-mixed", lr=0.01)
    calls = []
    original = opt.scaler.update
    opt.scaler.update = lambda *a: (calls.append(1), original(*a))[1]
    x, y = torch.randn(16, 1), torch.randn(16, 1)
    out = task.train_step((x, y), opt)
    opt.end_iteration()
    assert set(out) == {"d_loss", "g_loss"} and len(calls) == 1


def test_grad_clip_bounds_the_gradient_norm():
    net = nn.Linear(4, 1)
    opt = Optimization({"main": torch.optim.SGD(net.parameters(), lr=0.0)}, Precision("32", CPU), grad_clip=0.5)
    loss = (net(torch.full((8, 4), 100.0)) ** 2).mean()
    opt.step("main", loss)
    norm = torch.norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_nan_loss_stops_before_any_checkpoint(tmp_path):
    task = ClassificationTask(nn.Linear(4, 2), META)
    opt = make_opt(task, lr=1e30)
    with torch.no_grad():
        task.net.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"at step 1\."):
        run_fit(tmp_path, task, opt)
    assert not (tmp_path / "ckpt" / "last.ckpt").exists()


def test_mean_accumulator_weights_by_batch_size():
    acc = MeanAccumulator()
    acc.add({"acc": torch.tensor(1.0)}, 3)
    acc.add({"acc": torch.tensor(0.0)}, 1)
    assert acc.compute("val/") == {"val/acc": 0.75}


def test_evaluate_restores_train_mode_and_counts_every_sample():
    net = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5))
    task = ClassificationTask(net, META)
    loader = BatchLoader(toy_split(70), META, 32, CPU)  # 32 + 32 + 6
    metrics = evaluate(task, loader)
    assert net.training and set(metrics) == {"val/loss", "val/acc"}
    logits = net.eval()(toy_split(70).x)
    expected = (logits.argmax(1) == toy_split(70).y).float().mean().item()
    assert metrics["val/acc"] == pytest.approx(expected)


def test_is_better_never_picks_nan():
    assert checkpoint.is_better(0.5, None, "max")
    assert not checkpoint.is_better(float("nan"), None, "max")
    assert not checkpoint.is_better(float("nan"), 0.1, "min")
    assert checkpoint.is_better(0.05, 0.1, "min") and not checkpoint.is_better(0.05, 0.1, "max")


def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "a.ckpt"
    payload = {"format": "trainkit", "config": "seed: 0\n", "w": torch.arange(3)}
    checkpoint.save(path, payload)
    checkpoint.save(path, {**payload, "w": torch.arange(4)})
    assert torch.equal(checkpoint.load(path)["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"], "no temporary file left behind"


class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['BOOM_TARGET'])}",))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch):
    target = tmp_path / "pwned"
    monkeypatch.setenv("BOOM_TARGET", str(target))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not switch the safe load off
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "trainkit", "config": "", "x": Boom()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="posix.system|os.system"):
        checkpoint.load(path)
    assert not target.exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", os.urandom(256)])
def test_bad_checkpoint_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="bad.ckpt"):
        checkpoint.load(path)


def test_fifo_checkpoint_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(checkpoint.CheckpointError, match="not a regular file"):
        checkpoint.load(fifo)


def test_plain_torch_file_is_not_a_trainkit_checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not a trainkit checkpoint"):
        checkpoint.load(path)


def test_load_modules_lists_mismatched_shapes(tmp_path):
    payload = {"modules": {"net": nn.Linear(4, 2).state_dict()}}
    with pytest.raises(checkpoint.CheckpointError, match="size mismatch"):
        checkpoint.load_modules(payload, {"net": nn.Linear(4, 3)}, "x.ckpt")


def test_loader_epoch_permutations_are_seeded_and_cover_the_split():
    split = Split(torch.arange(100).float()[:, None], torch.arange(100))
    meta = DataMeta(name="toy", kind="classification", in_shape=(1,), num_outputs=100)
    loader = BatchLoader(split, meta, 32, CPU, shuffle=True, seed=3)
    loader.set_epoch(1)
    epoch1 = torch.cat([y for _, y in loader])
    loader.set_epoch(2)
    epoch2 = torch.cat([y for _, y in loader])
    assert sorted(epoch1.tolist()) == list(range(100)) and not torch.equal(epoch1, epoch2)
    loader.set_epoch(1, start_batch=2)  # resuming mid-epoch replays the rest of the same order
    assert torch.equal(torch.cat([y for _, y in loader]), epoch1[64:])
    assert len(loader) == 4


def test_loader_normalizes_uint8_per_batch():
    x = torch.full((4, 1, 2, 2), 255, dtype=torch.uint8)
    meta = DataMeta(name="img", kind="classification", in_shape=(1, 2, 2), num_outputs=2, scale=255.0,
                    mean=(0.5,), std=(0.25,))
    (xb, _), = list(BatchLoader(Split(x, torch.zeros(4, dtype=torch.long)), meta, 4, CPU))
    assert xb.dtype == torch.float32 and torch.allclose(xb, torch.full_like(xb, 2.0))


def test_augment_crops_and_flips_whole_batches():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = Augment(crop_padding=2, hflip=True)(x, g)
    assert out.shape == x.shape
    assert Augment(0, False)(x, g).equal(x)
    flipped = Augment(0, True)(x, torch.Generator().manual_seed(1))
    for i in range(2):  # each image is itself or its mirror
        assert flipped[i].equal(x[i]) or flipped[i].equal(x[i].flip(2))


def test_augment_crop_is_a_window_of_the_zero_padded_image_drawn_per_image():
    """Each output image is one (2p+1)² shift of its zero-padded input, mirrored or not; images draw their own shifts;
    uint8 and channels_last batches give the same pixels as float ones."""
    n, p = 64, 2
    x = torch.randint(1, 256, (n, 3, 8, 8), dtype=torch.uint8)
    padded = torch.nn.functional.pad(x, (p,) * 4)
    out = Augment(crop_padding=p, hflip=True)(x, torch.Generator().manual_seed(3))
    shifts = set()
    for i in range(n):
        found = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 for view in (out[i], out[i].flip(2)) if view.equal(padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert found, f"image {i} is not a shifted window of its padded input"
        shifts.update(found)
    assert len(shifts) > 10, "the shifts are drawn per image"
    for same in (x.float(), x.contiguous(memory_format=torch.channels_last)):
        again = Augment(crop_padding=p, hflip=True)(same, torch.Generator().manual_seed(3))
        assert again.to(torch.uint8).equal(out)


def test_mmd_is_small_for_same_distribution_and_large_for_different():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g)
    assert mmd_rbf(a, b) < 0.02 < mmd_rbf(a, b + 3)


def test_settings_refuse_unknown_precision():
    with pytest.raises(ValueError, match="trainer.precision='fp8'"):
        TrainerSettings(precision="fp8")
    assert TrainerSettings(precision=32).precision == "32"
    assert math.isfinite(TrainerSettings().plain_every_s)


def test_python_pickle_is_not_used_by_checkpoints():
    source = Path(checkpoint.__file__).read_text()
    assert "weights_only=True" in source and "pickle.load" not in source
    assert pickle  # imported for the malicious-file fixture above


def test_the_live_progress_bar_redraws_from_the_training_thread_only(monkeypatch):
    """rich's refresh thread redrew 10 times a second and cost 8.8% of an MNIST MLP epoch on 2 cores: the bar
    is drawn by the step that finds REFRESH_S passed, with the latest metrics, and no thread of its own."""
    import io
    import threading

    from rich.console import Console

    from trainkit.logging.console import ConsoleProgress

    out = io.StringIO()
    progress = ConsoleProgress(Console(file=out, force_terminal=True, width=120), max_epochs=2, mode="rich")
    before = threading.active_count()
    progress.start_epoch(1, 10)
    assert threading.active_count() == before, "no refresh thread"
    monkeypatch.setattr(ConsoleProgress, "REFRESH_S", 3600.0)
    progress.step({"train/loss": 0.5}, 1000.0)
    assert "1/10" not in out.getvalue(), "within REFRESH_S of the last redraw: nothing drawn"
    monkeypatch.setattr(ConsoleProgress, "REFRESH_S", 0.0)
    progress.step(None, None)
    assert "2/10" in out.getvalue() and "train/loss 0.5" in out.getvalue(), "the count and the last metrics shown"
    progress.end_epoch(1, {"train/loss": 0.25})
    progress.close()
    assert "epoch 1/2" in out.getvalue() and "train/loss 0.25" in out.getvalue()
