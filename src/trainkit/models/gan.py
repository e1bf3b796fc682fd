"""A GAN of two MLPs. The generator maps latent noise to a sample of the data's shape; the
discriminator maps a sample to one real/fake logit. Losses and update order live in tasks/gan.py."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from trainkit.models.mlp import mlp_layers


class Generator(nn.Module):
    def __init__(self, latent_dim: int, sample_shape: Sequence[int], hidden: Sequence[int],
                 bounds: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.latent_dim, self.sample_shape = latent_dim, tuple(sample_shape)
        self.net = nn.Sequential(*mlp_layers(latent_dim, hidden, math.prod(sample_shape),
                                             activation=lambda: nn.LeakyReLU(0.2)))
        # Image data is bounded (pixels in [0, 1] before normalization): a sigmoid maps onto those
        # bounds in normalized space. Unbounded data (regression points) gets a linear output.
        # bounds: per-channel (low, high) tensors shaped like C×1×1, broadcast over a batch.
        self.register_buffer("low", None if bounds is None else bounds[0].unsqueeze(0))
        self.register_buffer("high", None if bounds is None else bounds[1].unsqueeze(0))

    def forward(self, z: Tensor) -> Tensor:
        out = self.net(z).view(len(z), *self.sample_shape)
        if self.low is not None:
            out = self.low + (self.high - self.low) * torch.sigmoid(out)
        return out


class Discriminator(nn.Module):
    def __init__(self, sample_shape: Sequence[int], hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers = mlp_layers(math.prod(sample_shape), hidden, 1, dropout, activation=lambda: nn.LeakyReLU(0.2))
        self.net = nn.Sequential(nn.Flatten(), *layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


class GAN(nn.Module):
    def __init__(self, sample_shape: Sequence[int], latent_dim: int = 64, g_hidden: Sequence[int] = (256, 512),
                 d_hidden: Sequence[int] = (512, 256), dropout: float = 0.3,
                 bounds: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.generator = Generator(latent_dim, sample_shape, g_hidden, bounds)
        self.discriminator = Discriminator(sample_shape, d_hidden, dropout)

    def forward(self, z: Tensor) -> Tensor:
        """Generate samples from latent noise z (N×latent_dim)."""
        return self.generator(z)
