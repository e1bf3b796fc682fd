"""TensorBoard event files under the run's tensorboard/ directory (torch's SummaryWriter)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter


class TensorBoardLog:
    def __init__(self, directory: Path, purge_step: int | None = None) -> None:
        # purge_step: on resume, events logged after the checkpoint by the interrupted process are dropped.
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def close(self) -> None:
        self.writer.close()
