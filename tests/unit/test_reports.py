"""Units of the after-training reports: the measures against closed forms, the raw-input wrapper against the
batch loader, and what the pictures show."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import BatchLoader
from trainkit.reports.inference import RawInput
from trainkit.reports.measures import confusion_matrix, energy_distance, frechet_distance, per_class_accuracy, r2_score
from trainkit.reports.render import (BLUE, GREEN, RED, Series, bar_chart, confusion_image, image_grid, scatter_plot,
                                     to_tensor)
from trainkit.tasks.gan import scatter_image


def test_confusion_matrix_rows_are_true_classes():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    m = confusion_matrix(targets, predicted, 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(m) == [0.5, 1.0, pytest.approx(2 / 3), None]  # class 3 has no samples


def test_r2_is_one_when_perfect_and_zero_for_the_mean():
    y = torch.randn(100, 2)
    assert r2_score(y, y) == pytest.approx(1.0)
    assert r2_score(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, shifted mean: FD = ‖shift‖².
    assert frechet_distance(a, a + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)) == pytest.approx(5.0, rel=1e-6)
    # Doubled: μb = 2μa and Σb = 4Σa, so FD = ‖μa‖² + tr(Σa)(1 + 4 − 2·2) = ‖μa‖² + tr(Σa).
    expected = a.mean(0).pow(2).sum().item() + torch.cov(a.T).trace().item()
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_scipy_on_unrelated_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(500, 6, generator=g, dtype=torch.float64) * 2 + 1
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    root = scipy_linalg.sqrtm(ca @ cb).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + ca.trace() + cb.trace() - 2 * root.trace()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_energy_distance_is_zero_only_for_equal_sets():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(300, 2, generator=g)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    near, far = energy_distance(a, a + 0.1), energy_distance(a, a + 1.0)
    assert 0 < near < far and energy_distance(a + 1.0, a) == pytest.approx(far)


@pytest.mark.parametrize("meta", [
    DataMeta("mnist", "classification", (1, 28, 28), 10, scale=255.0, mean=(0.1307,), std=(0.3081,)),
    DataMeta("cifar", "classification", (3, 32, 32), 10, scale=255.0, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)),
    DataMeta("points", "regression", (1,), 1),
])
def test_raw_input_normalizes_exactly_as_the_batch_loader(meta):
    """What predict and export feed the network is bit for bit what training fed it."""
    shape = (20, *meta.in_shape)
    x = torch.randint(0, 256, shape, dtype=torch.uint8) if meta.scale != 1.0 else torch.randn(shape)
    (from_loader, _), = list(BatchLoader(Split(x, torch.zeros(20)), meta, 20, torch.device("cpu")))
    assert torch.equal(RawInput(meta)(x), from_loader)
    if meta.scale != 1.0:
        assert torch.equal(RawInput(meta)(x.float()), from_loader)  # float pixel values 0..255 too


def near(image, rgb, tol: int = 3) -> np.ndarray:
    """H×W mask of the pixels within `tol` of the colour `rgb` (0..255) in every channel."""
    pixels = np.asarray(image.convert("RGB")).astype(int) if hasattr(image, "convert") else \
        (image.permute(1, 2, 0).numpy() * 255).round().astype(int)
    return (np.abs(pixels - np.array(rgb)) <= tol).all(-1)


def test_confusion_image_grows_with_the_class_count():
    sizes = []
    for k in (3, 10, 100):
        names = [f"class{i}" for i in range(k)]
        matrix = confusion_matrix(torch.arange(100) % k, (torch.arange(100) * 7) % k, k)
        image = confusion_image(matrix, names, "title")
        assert image.mode == "RGB"
        sizes.append(image.size)
    assert sizes[1][0] > 10 * 44  # ten cells of 44 pixels, and the class names beside them
    assert sizes[0][0] < sizes[1][0] < sizes[2][0] and sizes[0][1] < sizes[1][1] < sizes[2][1]


def test_confusion_colour_is_the_square_root_of_the_share_of_the_true_class():
    import matplotlib

    blues = matplotlib.colormaps["Blues"]
    shade = lambda share: [round(255 * c) for c in blues(share ** 0.5)[:3]]  # noqa: E731
    image = confusion_image(torch.tensor([[1, 3], [2, 2]]), ["a", "b"], "t")
    for share in (1 / 4, 3 / 4, 2 / 4):  # of each row
        assert near(image, shade(share)).sum() > 300, share  # a cell's area, less its printed count
    for share in (1 / 3, 3 / 5, 2 / 3, 2 / 5):  # of each column, or linear: not what is drawn
        assert near(image, shade(share)).sum() < 50, share
    assert near(image, shade(0.25 ** 2)).sum() < 50  # 0.25 would be this shade on a linear scale


def test_scatter_plot_draws_each_series_in_its_colour():
    g = torch.Generator().manual_seed(0)
    plot = scatter_plot([Series(torch.randn(200, 2, generator=g), GREEN, "real"),
                         Series(torch.randn(200, 2, generator=g) + 3, RED, "generated")], "t", "x", "y")
    assert plot.mode == "RGB" and plot.size == (600, 480)
    assert near(plot, GREEN).sum() > 500 and near(plot, RED).sum() > 500
    assert near(plot, BLUE).sum() == 0
    plot = scatter_plot([Series(torch.randn(50, 2), (255, 0, 0), "points")], "t", "x", "y", diagonal=True)
    assert to_tensor(plot).shape == (3, 480, 600)


def test_scatter_plot_leaves_out_non_finite_points():
    finite = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 0.5]])
    bad = torch.tensor([[float("nan"), 1.0], [1e3, float("inf")], [float("-inf"), 0.0]])
    for diagonal in (False, True):
        with_bad = scatter_plot([Series(torch.cat([finite, bad]), RED, "p")], "t", "x", "y", diagonal=diagonal)
        without = scatter_plot([Series(finite, RED, "p")], "t", "x", "y", diagonal=diagonal)
        assert np.array_equal(np.asarray(with_bad), np.asarray(without))  # the scales ignore them, too
        only_bad = scatter_plot([Series(bad, RED, "p")], "t", "x", "y", diagonal=diagonal)
        empty = scatter_plot([Series(torch.zeros(0, 2), RED, "p")], "t", "x", "y", diagonal=diagonal)
        assert np.array_equal(np.asarray(only_bad), np.asarray(empty))  # the legend, no point


def test_bar_heights_follow_the_values():
    chart = bar_chart([3, 0, 5], ["a", "b", "c"], "t")
    assert chart.mode == "RGB" and chart.size == (600, 320)
    blue = near(chart, BLUE)
    columns = blue.any(0).nonzero()[0]
    thirds = [(columns < 200).any(), ((columns >= 200) & (columns < 400)).any(), (columns >= 400).any()]
    assert thirds == [True, False, True]  # no bar for 0
    left, right = blue[:, columns[0]].sum(), blue[:, columns[-1]].sum()
    assert right / left == pytest.approx(5 / 3, rel=0.03)


def test_charts_drawn_at_once_on_threads_match_those_drawn_in_turn():
    """Each chart has its own figure: nothing (pyplot's current figure, rcParams) is shared between calls."""
    jobs = [lambda i=i: scatter_plot([Series(torch.arange(20.0).view(10, 2) * i, RED, f"s{i}")], f"t{i}", "x", "y")
            for i in range(4)]
    alone = [np.asarray(job()) for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = [np.asarray(image) for image in pool.map(lambda job: job(), jobs)]
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_gan_epoch_scatter_is_a_chart_tensor_of_about_the_asked_size():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g) * 2
    picture = scatter_image(real, fake)
    assert picture.dtype == torch.float32 and picture.shape[0] == 3
    assert 200 <= picture.shape[1] <= 320 and 200 <= picture.shape[2] <= 320
    assert 0 <= picture.min() and picture.max() <= 1
    assert near(picture, GREEN).sum() > 100 and near(picture, RED).sum() > 100
    fake_only = scatter_image(None, fake)
    assert near(fake_only, GREEN).sum() == 0 and near(fake_only, RED).sum() > 100


def test_image_grid_keeps_every_pixel():
    images = torch.rand(10, 1, 28, 28)
    grid = image_grid(images, ["a\nb"] * 10, nrow=4)
    assert grid.size[0] >= 4 * 84 and grid.size[1] >= 3 * 84  # 3 rows of 4, zoomed 3×
    first = np.asarray(grid)[4:4 + 84:3, 4:4 + 84:3, 0]  # the first tile, one pixel of each 3×3 block
    assert np.array_equal(first, (images[0, 0] * 255).round().to(torch.uint8).numpy())
