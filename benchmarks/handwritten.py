"""Plain PyTorch, written as a user would without trainkit: the baselines that benchmarks/run.py measures
trainkit against. No trainkit code runs here; the models are the same nn.Modules (trainkit.models) so that
only the loop and the data path differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
