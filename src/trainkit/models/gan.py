"""A GAN: a generator maps latent noise to a sample of the data's shape; a discriminator maps a sample
to one real/fake logit. Two architectures: DCGAN-style convolutions for images (`arch=conv`) and MLPs
for images, (x, y) points or whole curves (`arch=mlp`, its hidden layers' activation LeakyReLU(0.2) or ReLU). Losses
and update order live in tasks/gan.py.

Class-conditional (`num_classes` > 0): the generator's input is the noise followed by a one-hot class code
(InfoGAN's layout: one input vector, so the exported generator keeps one input), and the discriminator scores
a (sample, class) pair with a projection (Miyato & Koyama, 2018): its logit plus the inner product of its
last features with a learned embedding of the class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from trainkit.models.mlp import mlp_layers

ARCHS = ("conv", "mlp")
# The MLPs' activation: LeakyReLU keeps a gradient for negative inputs (the usual GAN choice); ReLU is the seeds'
# painter's (Linear, ReLU, Linear).
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}


def conv_generator(latent_dim: int, sample_shape: Sequence[int], channels: Sequence[int]) -> list[nn.Module]:
    """DCGAN's generator: a linear layer to a C0×(H/2^n)×(W/2^n) map, then n stride-2 transposed convs, each
    doubling the size, with batch norm + ReLU before each; the last one outputs the image's channels."""
    c, h, w = sample_shape
    n = len(channels)
    if n == 0 or h % 2 ** n or w % 2 ** n:
        raise ValueError(f"model.g_channels={list(channels)} upsamples {n} times (×{2 ** n}), which must divide the "
                         f"image size {h}×{w}; give model.g_channels one to {_max_halvings(h, w)} entries.")
    h0, w0 = h // 2 ** n, w // 2 ** n
    layers: list[nn.Module] = [nn.Linear(latent_dim, channels[0] * h0 * w0, bias=False),
                               nn.Unflatten(1, (channels[0], h0, w0))]
    for c_in, c_out in zip(channels, [*channels[1:], c]):
        layers += [nn.BatchNorm2d(c_in), nn.ReLU(),
                   nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=c_out == c)]
    return layers


def conv_discriminator(sample_shape: Sequence[int], channels: Sequence[int], dropout: float) -> list[nn.Module]:
    """Stride-2 4×4 convs with LeakyReLU (and dropout), then one linear logit. No batch norm: the task runs
    the discriminator once over real and fake together, and batch statistics would mix the two."""
    c, h, w = sample_shape
    if len(channels) > _max_halvings(h, w):
        raise ValueError(f"model.d_channels={list(channels)} halves {h}×{w} images {len(channels)} times; give it at "
                         f"most {_max_halvings(h, w)} entries.")
    layers: list[nn.Module] = []
    for c_out in channels:
        layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        c, h, w = c_out, h // 2, w // 2
    return [*layers, nn.Flatten(), nn.Linear(c * h * w, 1)]


def _max_halvings(h: int, w: int) -> int:
    n = 0
    while min(h, w) % 2 ** (n + 1) == 0 and min(h, w) // 2 ** (n + 1) >= 2:
        n += 1
    return n


class Generator(nn.Module):
    def __init__(self, latent_dim: int, sample_shape: Sequence[int], layers: list[nn.Module],
                 bounds: tuple[Tensor, Tensor] | None = None, num_classes: int = 0) -> None:
        super().__init__()
        # Its input: latent_dim noise values, then a one-hot class code of num_classes (none: unconditional).
        self.latent_dim, self.num_classes, self.sample_shape = latent_dim, num_classes, tuple(sample_shape)
        self.net = nn.Sequential(*layers)
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
    def __init__(self, layers: list[nn.Module], num_classes: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(*layers)  # ends with the linear layer that gives the logit
        self.embed = None
        if num_classes:
            self.embed = nn.Embedding(num_classes, layers[-1].in_features)
            nn.init.normal_(self.embed.weight, std=0.01)  # starts as the unconditional discriminator

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The real/fake logit of each sample; of each (sample, class) pair when conditional."""
        if self.embed is None:
            return self.net(x).squeeze(1)
        h = self.net[:-1](x)
        return self.net[-1](h).squeeze(1) + (self.embed(y) * h).sum(1)


class GAN(nn.Module):
    def __init__(self, sample_shape: Sequence[int], arch: str = "mlp", latent_dim: int = 64,
                 g_hidden: Sequence[int] = (256, 512), d_hidden: Sequence[int] = (512, 256),
                 g_channels: Sequence[int] = (64, 32), d_channels: Sequence[int] = (32, 64), dropout: float = 0.3,
                 bounds: tuple[Tensor, Tensor] | None = None, num_classes: int = 0,
                 activation: str = "leaky_relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation={activation!r} is not an activation of the MLPs; choose one of: "
                             f"{', '.join(ACTIVATIONS)}.")
        if arch == "conv":
            if len(sample_shape) != 3:
                raise ValueError(f"model.arch=conv needs image data (C×H×W); this data has samples of shape "
                                 f"{tuple(sample_shape)}: use model.arch=mlp.")
            g_layers = conv_generator(latent_dim + num_classes, sample_shape, g_channels)
            d_layers = conv_discriminator(sample_shape, d_channels, dropout)
        elif arch == "mlp":
            size = math.prod(sample_shape)
            act = ACTIVATIONS[activation]
            g_layers = mlp_layers(latent_dim + num_classes, g_hidden, size, activation=act)
            d_layers = [nn.Flatten(), *mlp_layers(size, d_hidden, 1, dropout, activation=act)]
        else:
            raise ValueError(f"model.arch={arch!r} is not a GAN architecture; choose one of: {', '.join(ARCHS)}.")
        self.generator = Generator(latent_dim, sample_shape, g_layers, bounds, num_classes)
        self.discriminator = Discriminator(d_layers, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        """Generate samples from latent noise z (N×latent_dim, then N×num_classes one-hot when conditional)."""
        return self.generator(z)
