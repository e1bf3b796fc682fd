"""Units of the after-training reports: the measures against closed forms, the raw-input wrapper against the
batch loader, and the pictures' shapes."""

from __future__ import annotations

import pytest
import torch

from trainkit.data.base import DataMeta, Split
from trainkit.data.loader import BatchLoader
from trainkit.reports.inference import RawInput
from trainkit.reports.measures import confusion_matrix, energy_distance, frechet_distance, per_class_accuracy, r2_score
from trainkit.reports.render import Series, bar_chart, confusion_image, image_grid, scatter_plot, to_tensor


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


def test_pictures_have_the_expected_layout():
    names = [f"class{i}" for i in range(10)]
    matrix = confusion_matrix(torch.arange(100) % 10, (torch.arange(100) * 7) % 10, 10)
    assert confusion_image(matrix, names, "title").size[0] > 10 * 44
    grid = image_grid(torch.rand(10, 1, 28, 28), ["a\nb"] * 10, nrow=4)
    assert grid.size[0] >= 4 * 84 and grid.size[1] >= 3 * 84  # 3 rows of 4, zoomed 3×
    plot = scatter_plot([Series(torch.randn(50, 2), (255, 0, 0), "points")], "t", "x", "y", diagonal=True)
    assert to_tensor(plot).shape == (3, 480, 600)
    assert bar_chart([3, 0, 5], ["a", "b", "c"], "t").size == (600, 320)
