"""Plain PyTorch, written as a user would without trainkit: the baselines that benchmarks/run.py measures
trainkit against. No trainkit code runs here; the models are the same nn.Modules (trainkit.models) so that
only the loop and the data path differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalized(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...], scale: float = 255.0) -> Tensor:
    """The whole split as normalized float32, once (what a hand-written script does before training)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x.float() / scale - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def dataloader(x: Tensor, y: Tensor, batch_size: int, seed: int = 0) -> torch.utils.data.DataLoader:
    """The tutorial way: a TensorDataset in a DataLoader, shuffled, per-sample indexing and collation."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def dataloader_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: torch.utils.data.DataLoader) -> int:
    model.train()
    seen = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen


def indexed_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch_size: int,
                  generator: torch.Generator, max_batches: int | None = None) -> int:
    """The fastest plain loop here: the normalized split in memory, batches cut from a random permutation
    (the first `max_batches` of them, if given). Returns the samples trained on."""
    model.train()
    perm = torch.randperm(len(x), generator=generator).to(x.device)  # a no-op on the CPU
    end = len(x) if max_batches is None else min(len(x), max_batches * batch_size)
    for i in range(0, end, batch_size):
        idx = perm[i:i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return end


@torch.inference_mode()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    was = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    model.train(was)
    return correct / len(x)


def tutorial(model: nn.Module, x: Tensor, y: Tensor, budget_s: float, evaluate: Callable[[], float],
             checkpoints: list[float], batch_size: int = 4, lr: float = 0.001, momentum: float = 0.9,
             seed: int = 0) -> list[dict[str, float]]:
    """The classic recipe of PyTorch's CIFAR-10 tutorial: SGD lr 0.001 momentum 0.9, batch 4, epochs over a
    shuffled DataLoader, running until `budget_s` seconds of training. At each training time in `checkpoints`
    (seconds) the test accuracy is taken; that evaluation is not counted as training time."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loader = dataloader(x, y, batch_size, seed)
    todo = sorted(c for c in checkpoints if c <= budget_s) + [budget_s]
    out: list[dict[str, float]] = []
    trained, epoch, samples = 0.0, 0, 0
    while todo:
        epoch += 1
        model.train()
        start = time.perf_counter()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            samples += len(yb)
            if trained + time.perf_counter() - start >= todo[0]:
                trained += time.perf_counter() - start
                out.append({"train_s": trained, "epochs": samples / len(x), "test_acc": evaluate()})
                todo.pop(0)
                if not todo:
                    break
                model.train()
                start = time.perf_counter()
        else:
            trained += time.perf_counter() - start
    return out


@dataclass
class Recipe:
    """The fast presets' recipe, written out by hand: SGD with Nesterov momentum, one cycle of the learning rate
    (linear up for `pct_start` of the steps, linear down), label smoothing, random shifts and flips, and test
    logits averaged over each image and its mirror."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pct_start: float = 0.25
    label_smoothing: float = 0.0
    crop_padding: int = 0
    hflip: bool = False
    tta_flip: bool = False
    channels_last: bool = False
    seed: int = 0


def augment(x: Tensor, padding: int, hflip: bool, g: torch.Generator) -> Tensor:
    """Each image shifted by up to `padding` pixels (zero-padded, then cropped) and mirrored with probability 1/2."""
    n, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        dy, dx = (torch.randint(0, 2 * padding + 1, (n,), generator=g) for _ in range(2))
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if hflip:
        x = torch.where((torch.rand(n, generator=g) < 0.5)[:, None, None, None], x.flip(3), x)
    return x


@torch.inference_mode()
def tta_accuracy(model: nn.Module, x: Tensor, y: Tensor, flip: bool, batch_size: int = 1000) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        logits = model(xb) + model(xb.flip(3)) if flip else model(xb)
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was)
    return correct / len(x)


def recipe_loop(model: nn.Module, x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, r: Recipe,
                eval_steps: set[int]) -> list[dict[str, float]]:
    """Train `model` on the normalized split (x, y) by the recipe; after each step in `eval_steps` (and at the end)
    the test accuracy is taken, outside the timed training. Returns [{step, train_s, test_acc}]."""
    torch.manual_seed(r.seed)
    fmt = torch.channels_last if r.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=True,
                          weight_decay=r.weight_decay, fused=True)
    steps = r.epochs * (len(x) // r.batch_size + bool(len(x) % r.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=steps, pct_start=r.pct_start,
                                                anneal_strategy="linear")
    g = torch.Generator().manual_seed(r.seed)
    curve, trained, step = [], 0.0, 0
    xt = xt.contiguous(memory_format=fmt)
    for _ in range(r.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), r.batch_size):
            idx = perm[i:i + r.batch_size]
            xb = augment(x[idx], r.crop_padding, r.hflip, g).contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step in eval_steps or step == steps:
                trained += time.perf_counter() - start
                curve.append({"step": step, "train_s": trained, "test_acc": tta_accuracy(model, xt, yt, r.tta_flip)})
                start = time.perf_counter()
        trained += time.perf_counter() - start
    return curve


def mnist_mlp_script(train_csv: str) -> None:
    """A whole hand-written MNIST run as found in tutorials, for its memory: pandas, float32, DataLoader."""
    import pandas as pd

    from trainkit.models.mlp import MLP

    frame = pd.read_csv(train_csv)
    y = torch.tensor(frame["label"].to_numpy())
    x = torch.tensor(frame.drop(columns="label").to_numpy(), dtype=torch.float32).view(-1, 1, 28, 28)
    del frame
    x = (x / 255 - 0.1307) / 0.3081
    model = MLP((1, 28, 28), 10, hidden=[500])
    dataloader_epoch(model, torch.optim.Adam(model.parameters(), lr=1e-3), dataloader(x, y, 128))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["mnist-mlp"]:
        mnist_mlp_script(sys.argv[2])
