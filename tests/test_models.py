"""Models size themselves from the data's shapes."""

from __future__ import annotations

import pytest
import torch

from trainkit.models.cnn import CNN
from trainkit.models.gan import GAN
from trainkit.models.mlp import MLP


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_cnn_is_lenet_sized_on_mnist_and_cifar(shape):
    net = CNN(shape, 10)
    assert net(torch.zeros(5, *shape)).shape == (5, 10)
    # LeNet's classifier sees 16×5×5 features on both image sizes.
    assert net.classifier[1].in_features == 16 * 5 * 5


def test_cnn_refuses_non_images():
    with pytest.raises(ValueError, match="needs image data"):
        CNN((1,), 1)


@pytest.mark.parametrize("shape,outputs", [((1, 28, 28), 10), ((1,), 1), ((3, 32, 32), 10)])
def test_mlp_any_shape(shape, outputs):
    assert MLP(shape, outputs, hidden=(7,), dropout=0.1)(torch.zeros(3, *shape)).shape == (3, outputs)


def test_gan_generates_the_sample_shape_within_bounds():
    mean, std = torch.tensor([0.5]).view(1, 1, 1), torch.tensor([0.25]).view(1, 1, 1)
    gan = GAN((1, 28, 28), latent_dim=8, g_hidden=(16,), d_hidden=(16,), bounds=((0 - mean) / std, (1 - mean) / std))
    fake = gan(torch.randn(4, 8) * 100)
    assert fake.shape == (4, 1, 28, 28)
    assert fake.min() >= -2.0 - 1e-5 and fake.max() <= 2.0 + 1e-5
    assert gan.discriminator(fake).shape == (4,)
    points = GAN((2,), latent_dim=8, g_hidden=(16,), d_hidden=(16,))(torch.randn(4, 8))
    assert points.shape == (4, 2)
