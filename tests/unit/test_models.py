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


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_gan_generates_images_of_the_data_shape(shape):
    bounds = (torch.full((shape[0], 1, 1), -1.0), torch.full((shape[0], 1, 1), 2.0))
    gan = GAN(shape, arch="conv", latent_dim=8, g_channels=(8, 4), d_channels=(4, 8), bounds=bounds)
    fake = gan(torch.randn(5, 8) * 100)
    assert fake.shape == (5, *shape) and fake.min() >= -1.0 and fake.max() <= 2.0
    assert gan.discriminator(fake).shape == (5,)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules()), \
        "the task runs D once over real and fake together: batch statistics would mix them"


def test_conv_gan_errors_name_the_key():
    with pytest.raises(ValueError, match=r"model.g_channels=\[8, 4, 2\] upsamples 3 times"):
        GAN((1, 28, 28), arch="conv", g_channels=(8, 4, 2))
    with pytest.raises(ValueError, match="model.d_channels"):
        GAN((1, 28, 28), arch="conv", d_channels=(2, 2, 2, 2))
    with pytest.raises(ValueError, match="model.arch=conv needs image data"):
        GAN((2,), arch="conv")
    with pytest.raises(ValueError, match="model.arch='dense' is not a GAN architecture"):
        GAN((2,), arch="dense")


def test_model_gan_picks_convolutions_for_images_and_mlps_for_points(compose, mnist_files):
    from trainkit.build import build_data, build_task

    images = compose("model=gan", "data=mnist_csv", f"data.train_csv={mnist_files['kaggle_train']}")
    task = build_task(images, build_data(images).meta)
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in task.gan.generator.modules())
    points = compose("model=gan")
    task = build_task(points, build_data(points).meta)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in task.gan.discriminator.modules())
