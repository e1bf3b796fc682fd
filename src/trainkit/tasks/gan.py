"""GAN training: the non-saturating loss with one discriminator step, then one generator step.

Samples are the data's images, whole curves (data that says its samples are curves of a family, `DataMeta.curve`:
the seeds' painter), or (x, y) points for other vector data (the GAN learns their joint distribution). A
class-conditional GAN (`model.conditional=true`, classification data) learns each class's
images: it trains on the real batch's labels and draws every class equally often. Validation measures a
kernel MMD between real and generated samples (lower is better). After training: distances to real data in
its report, the generator (noise in, raw samples out) as its export, grids, curves or point plots from `sample`; it
takes no input to predict from. Curves are also judged against their family, in validation and in the report:
the share of paintings between the family's bounds, the fit of a, and the discriminator's accuracy and score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import make_grid

from trainkit.data.base import DataMeta, Split
from trainkit.data.curves import Curves
from trainkit.engine.optimization import Optimization
from trainkit.errors import ConfigError
from trainkit.models.gan import GAN
from trainkit.reports.base import Drawn, EvalInputs, Report
from trainkit.tasks.base import Batch, CannotDo, Predictions

_EVAL_NOISE_SEED = 1234  # fixed noise at validation: val/mmd moves only when the weights do


def mmd_rbf(a: Tensor, b: Tensor) -> Tensor:
    """Squared maximum mean discrepancy with a Gaussian kernel (bandwidth by the median heuristic)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    both = torch.cat([a, b])
    d2 = torch.cdist(both, both).pow(2)
    bandwidth = d2.detach().median().clamp_min(1e-6)
    k = torch.exp(-d2 / bandwidth)
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def build_gan(meta: DataMeta, arch: str = "auto", latent_dim: int = 64, g_hidden: Sequence[int] = (256, 512),
              d_hidden: Sequence[int] = (512, 256), g_channels: Sequence[int] = (64, 32),
              d_channels: Sequence[int] = (32, 64), dropout: float = 0.3, conditional: bool = False,
              activation: str = "leaky_relu") -> GAN:
    """`model=gan`, sized from the data: images (convolutions by default), curves or (x, y) points (MLPs, with the
    `activation` leaky_relu or relu), an image's output squashed into the data's pixel range; conditioned on the
    data's classes with `conditional`."""
    sample_shape = GANTask.sample_shape(meta)
    if arch == "auto":  # convolutions for pictures, MLPs for points
        arch = "conv" if len(sample_shape) == 3 else "mlp"
    if conditional and meta.kind != "classification":
        raise ValueError(f"model.conditional=true draws samples of a chosen class, and data={meta.name} has no "
                         f"classes ({meta.kind} data): use model.conditional=false, or labelled classification data.")
    return GAN(sample_shape, arch, latent_dim, g_hidden, d_hidden, g_channels, d_channels, dropout,
               GANTask.bounds(meta), meta.num_outputs if conditional else 0, activation)


@dataclass
class GANEvalOptions:
    """`trainkit eval`'s options for a GAN."""

    samples: int = 64  # generated images in samples.png (curves: the paintings paintings.png draws)
    # A classifier checkpoint trained on the same images (model=mlp or cnn): the Fréchet distance between real and
    # generated images in its penultimate layer (test/fd), and the classes it sees in the generated images.
    feature_ckpt: str | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"eval.samples={self.samples} must be at least 1: the generated images samples.png shows.")


class GANTask:
    monitor, monitor_mode = "val/mmd", "min"
    report_uses_train = True  # the floor of each distance: real training samples against the real split
    eval_options = GANEvalOptions

    @staticmethod
    def io_shapes(meta: DataMeta) -> None:
        """No shape check before training: the generator's input size is its own (model.latent_dim)."""
        return None

    def __init__(self, gan: GAN, meta: DataMeta, examples: Split | None = None, num_points: int = 512,
                 real_label: float = 0.9) -> None:
        self.gan, self.meta, self.real_label = gan, meta, real_label
        # Images: generate pictures, normalized as the loader normalizes them. Curves: whole paintings, as stored.
        # Anything else: (x, y) points.
        images = len(meta.in_shape) == 3
        self.curves = Curves.from_spec(meta.curve) if meta.curve is not None and not images else None
        self.joint = not images and self.curves is None
        self.mean = self.std = None  # per-channel, C×1×1: undo the loader's normalization for pictures
        if images and meta.mean is not None:
            self.mean = torch.tensor(meta.mean).view(-1, 1, 1)
            self.std = torch.tensor(meta.std).view(-1, 1, 1)
        z_gen = torch.Generator().manual_seed(_EVAL_NOISE_SEED)
        self.num_classes = gan.generator.num_classes  # 0: unconditional
        self.fixed_z = self._noise(num_points, z_gen)
        # A few real samples (as stored) for the point-cloud pictures and the curves' discriminator figures; a
        # checkpoint carries them.
        self.reference = None
        if examples is not None and self.joint:
            self.reference = self._joined(examples.x, examples.y)
        elif examples is not None and self.curves is not None:
            self.reference = examples.x.float()
        # What the training step runs: the two networks, or their DDP wrappers when data-parallel.
        self.g_train, self.d_train = gan.generator, gan.discriminator

    @staticmethod
    def sample_shape(meta: DataMeta) -> tuple[int, ...]:
        """What the generator makes for this data: an image, a curve's values, or one (x, y) row."""
        if len(meta.in_shape) == 3 or meta.curve is not None:
            return tuple(meta.in_shape)
        return (meta.in_shape[0] + meta.num_outputs,)

    @staticmethod
    def bounds(meta: DataMeta) -> tuple[Tensor, Tensor] | None:
        """The pixel range [0, 1] in normalized units, which the generator's output is squashed into."""
        if len(meta.in_shape) != 3 or meta.mean is None:
            return None
        mean, std = torch.tensor(meta.mean).view(-1, 1, 1), torch.tensor(meta.std).view(-1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    @staticmethod
    def _joined(x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([x.float().flatten(1), y.float().flatten(1)], 1)

    def modules(self) -> dict[str, nn.Module]:
        return {"gan": self.gan}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.g_train, self.d_train = wrap(self.gan.generator), wrap(self.gan.discriminator)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"disc": list(self.gan.discriminator.parameters()), "gen": list(self.gan.generator.parameters())}

    def _real(self, batch: Batch) -> Tensor:
        x, y = batch
        return self._joined(x, y).to(x.dtype) if self.joint else x

    def _noise(self, n: int, generator: torch.Generator | None = None, labels: Tensor | None = None) -> Tensor:
        """The generator's input: standard normal noise (drawn on the CPU), then (conditional) the one-hot code of
        `labels` on their device (no copy back to the host), by default every class in turn (0, 1, ..., 9, 0, ...),
        so each is drawn equally often."""
        z = torch.randn(n, self.gan.generator.latent_dim, generator=generator)
        if not self.num_classes:
            return z
        labels = torch.arange(n) % self.num_classes if labels is None else labels
        return torch.cat([z.to(labels.device), F.one_hot(labels.long(), self.num_classes).to(z.dtype)], 1)

    def _score(self, d: Callable[..., Tensor], samples: Tensor, labels: Tensor) -> Tensor:
        """The discriminator's logits, of (sample, class) pairs when conditional."""
        return d(samples, labels) if self.num_classes else d(samples)

    def train_step(self, batch: Batch, opt: Optimization) -> dict[str, Tensor]:
        real, labels = self._real(batch), batch[1]
        n = len(real)
        d = self.gan.discriminator
        with opt.autocast():
            # Conditional: the fakes get the real batch's classes, so both halves follow the data's class mix.
            fake = self.g_train(self._noise(n, labels=labels).to(real.device))
            # One discriminator pass over real and fake: DDP expects one forward per backward.
            both = torch.cat([real, fake.detach().to(real.dtype)])
            d_real, d_fake = self._score(self.d_train, both, torch.cat([labels, labels])).float().split(n)
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, self.real_label))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        opt.step("disc", d_loss)
        # The plain discriminator, frozen: the generator's loss leaves no gradients in it (and no DDP sync).
        d.requires_grad_(False)
        with opt.autocast():
            d_on_fake = self._score(d, fake, labels).float()
            g_loss = F.binary_cross_entropy_with_logits(d_on_fake, torch.ones_like(d_on_fake))
        opt.step("gen", g_loss)
        d.requires_grad_(True)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def eval_step(self, batch: Batch) -> dict[str, Tensor]:
        real, labels = self._real(batch), batch[1]
        noise = torch.Generator().manual_seed(_EVAL_NOISE_SEED)
        fake = self.gan(self._noise(len(real), noise, labels).to(real.device)).float()
        logit_real = self._score(self.gan.discriminator, real, labels).float()
        logit_fake = self._score(self.gan.discriminator, fake, labels).float()
        metrics = {"mmd": mmd_rbf(real, fake), "d_real": torch.sigmoid(logit_real).mean(),
                   "d_fake": torch.sigmoid(logit_fake).mean()}
        if self.curves is not None:  # per sample, so the epoch's means are over every painting
            metrics.update(between=self.curves.between(fake).float(), residual=self.curves.fit(fake)[1].float(),
                           d_acc=(logit_real > 0).float(), d_score=F.logsigmoid(logit_real) + F.logsigmoid(-logit_fake))
        return metrics

    @torch.inference_mode()
    def discriminator_figures(self, real: Tensor, fake: Tensor) -> tuple[float, float]:
        """The seeds' painter's two figures of the discriminator (unconditional): its accuracy on real samples (the
        share it scores above 0.5; 0.5 when D has converged) and its score, mean log D(real) + mean log(1 − D(fake))
        (the GAN value function: −log 4 ≈ −1.386 when G has converged)."""
        was_training = self.gan.training
        self.gan.eval()
        d = self.gan.discriminator
        device = next(d.parameters()).device
        logit_real = torch.cat([d(part.to(device)).float().cpu() for part in real.split(4096)])
        logit_fake = torch.cat([d(part.to(device)).float().cpu() for part in fake.split(4096)])
        self.gan.train(was_training)
        score = F.logsigmoid(logit_real).mean() + F.logsigmoid(-logit_fake).mean()
        return (logit_real > 0).float().mean().item(), score.item()

    @torch.inference_mode()
    def epoch_images(self) -> dict[str, Tensor]:
        was_training = self.gan.training
        self.gan.eval()
        device = next(self.gan.parameters()).device
        nrow = self.grid_columns(64)
        # a point cloud or curves (the bounds' share of all of them), or 8 rows of images
        z = self.fixed_z if self.joint or self.curves is not None else self.fixed_z[:8 * nrow]
        fake = self.gan(z.to(device)).float().cpu()
        self.gan.train(was_training)
        if self.joint:
            return {"samples": scatter_image(self.reference, fake)}
        if self.curves is not None:
            from trainkit.reports.gan import paintings_picture
            from trainkit.reports.render import to_tensor

            return {"paintings": to_tensor(paintings_picture(self, fake, shown=8, size=(480, 384)))}
        if self.mean is not None:
            fake = fake * self.std + self.mean
        return {"samples": make_grid(fake.clamp(0, 1), nrow=nrow, padding=2)}

    def grid_columns(self, n: int) -> int:
        """Columns of a grid of n images: one per class when conditional (a column holds one class), else square."""
        return self.num_classes if 0 < self.num_classes <= 16 else max(1, round(math.sqrt(n)))

    @torch.inference_mode()
    def generate(self, n: int, seed: int = 0, batch_size: int = 4096) -> Tensor:
        """`n` new samples on the CPU in the data's units: images N×C×H×W in [0, 1], or N×D (x, y) points.
        Used after training (eval, sample), not by the loop; the same seed gives the same samples."""
        was_training = self.gan.training
        self.gan.eval()
        device = next(self.gan.parameters()).device
        noise = torch.Generator().manual_seed(seed)
        z = self._noise(n, noise)  # conditional: every class in turn
        parts = [self.gan(z[start:start + batch_size].to(device)).float().cpu() for start in range(0, n, batch_size)]
        self.gan.train(was_training)
        fake = torch.cat(parts) if parts else torch.zeros(0, *self.gan.generator.sample_shape)
        if self.mean is not None:
            fake = (fake * self.std + self.mean).clamp(0, 1)
        return fake


    # --- after training -----------------------------------------------------------------------------------
    def report(self, inputs: EvalInputs, options: GANEvalOptions) -> Report:
        """Distances to the real split; on images, with `eval.feature_ckpt`, the Fréchet distance in the feature
        space of that classifier (this task's judge, restored here) and the classes it sees."""
        from trainkit.reports import gan

        classifier = None
        if options.feature_ckpt:
            judge = inputs.restore(options.feature_ckpt)
            if self.joint or self.curves is not None:
                rep = gan.report(inputs, options.samples)
                rep.notes.append("eval.feature_ckpt is for GANs on images; for points and curves the raw-value "
                                 "distance is reported")
                return rep
            classifier = self._feature_classifier(options.feature_ckpt, judge)
        return gan.report(inputs, options.samples, classifier)

    def _feature_classifier(self, path: str | None, task: Any) -> Any:
        """The classifier of `eval.feature_ckpt`: trained on this GAN's data, with a feature space."""
        theirs = task.meta
        if theirs.name != self.meta.name or tuple(theirs.in_shape) != tuple(self.meta.in_shape):
            raise CannotDo(
                f"eval.feature_ckpt={path} was trained on data={theirs.name}, this GAN on data={self.meta.name}: the "
                f"Fréchet distance needs a classifier of the same data. Train one, e.g. `trainkit train model=cnn "
                f"data={self.meta.name} ...`, and give its best.ckpt."
            )
        if not callable(getattr(task, "features", None)):
            raise CannotDo(f"eval.feature_ckpt={path} is not a classifier: give a checkpoint of model=mlp or "
                           f"model=cnn on data={self.meta.name}.")
        return task

    def predict(self, x: Tensor) -> Predictions:
        raise CannotDo("this is a GAN: it takes no inputs to predict from. Draw new samples with "
                       "`trainkit sample ckpt=PATH n=64`.")

    def deployable(self) -> nn.Module:
        from trainkit.reports.inference import RawOutput

        scale = self.meta.scale if self.mean is not None else 1.0
        model = nn.Sequential(self.gan.generator, RawOutput(scale, self.mean, self.std))
        return model.to(next(self.gan.parameters()).device).eval()

    def example_input(self, n: int, seed: int = 0) -> Tensor:
        return self._noise(n, torch.Generator().manual_seed(seed))

    def describe(self, uint8_input: bool = False) -> dict[str, Any]:
        latent, shape = self.gan.generator.latent_dim, list(self.gan.generator.sample_shape)
        raw = "pixel values 0..255" if self.mean is not None else "(x, y) points"
        if self.curves is not None:
            c = self.curves
            raw = f"curves: y at {c.points} x evenly spaced from {c.x_low:g} to {c.x_high:g} ({c.formula})"
        values = "standard normal latent noise"
        if self.num_classes:
            from trainkit.reports.base import class_names

            names = class_names(self.meta)
            values = (f"{latent} standard normal latent noise values, then a one-hot code of the class to draw "
                      f"({self.num_classes} values, in the order {', '.join(map(str, names))})")
        return {"task": "gan", "input": {"name": "z", "shape": ["batch", latent + self.num_classes],
                                         "dtype": "float32", "values": values},
                "output": {"shape": ["batch", *shape], "values": f"generated samples, {raw}"}}

    def sample(self, n: int, seed: int, nrow: int | None = None) -> Drawn:
        from trainkit.reports.render import GREEN, RED, Series, image_grid, scatter_plot

        fake = self.generate(n, seed=seed)
        if self.curves is not None:
            from trainkit.reports.gan import paintings_picture

            header = [f"y({x:.4g})" for x in self.curves.x.tolist()]
            table = (header, [[f"{v:.9g}" for v in row] for row in fake.tolist()])
            return Drawn(paintings_picture(self, fake, shown=n, title=f"{n} generated paintings (seed {seed})"), table)
        if not self.joint:
            return Drawn(image_grid(fake, nrow=nrow or self.grid_columns(n)))
        series = [Series(fake, RED, "generated")]
        title = f"{n} generated points (seed {seed})"
        if self.reference is not None:
            series.insert(0, Series(self.reference, GREEN, "real"))
            title += f" over {len(self.reference)} real ones"
        table = (["x", "y"], [[f"{v:.9g}" for v in row] for row in fake.tolist()])
        return Drawn(scatter_plot(series, title, "x", "y"), table)


def scatter_image(real: Tensor | None, fake: Tensor, size: int = 256) -> Tensor:
    """A 3×size×size picture (floats in [0, 1]) of 2-D points, the epoch picture of a GAN on points: a scatter plot
    with real points in green and generated ones in red on shared axes, with ticks and a legend."""
    from trainkit.reports.render import GREEN, RED, Series, scatter_plot, to_tensor

    series = [Series(fake, RED, "generated")]
    if real is not None:
        series.insert(0, Series(real, GREEN, "real"))
    return to_tensor(scatter_plot(series, "", "x", "y", size=(size, size)))
