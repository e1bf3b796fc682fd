"""`logger=tensorboard` (the default): TensorBoard event files in the run's tensorboard/ directory (torch's
SummaryWriter): the metrics, the pictures, and at the end the HPARAMS tab's session (this run's config beside its
final metrics). trainer.tensorboard=false switches it off too. `trainkit eval` writes its own with TensorBoardLog."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import Tensor

from trainkit.logging.trackers import TrackerRun
from trainkit.registry import register_tracker


class TensorBoardLog:
    """One event-file writer (tensorboard is slow to import: only when one is opened)."""

    def __init__(self, directory: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, events logged after the checkpoint by the interrupted process are dropped.
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step)

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int, name: str = "") -> None:
        """One session of TensorBoard's HPARAMS tab in this run: `params` (name → bool, number or string; lists
        are shown as text, None is left out), and `metrics` written as scalars at `step`, beside the run's curves
        (whose last values the tab also shows). `name` labels the session there, e.g. the run's overrides.

        No Experiment summary is written: TensorBoard then builds the table from the sessions of every run
        under --logdir, so jobs with different keys (model=mlp and model=cnn) still share one table."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        start = plugin_data_pb2.SessionStartInfo(group_name=name, start_time_secs=time.time())
        for key, value in params.items():
            if value is None:
                continue
            if isinstance(value, bool):  # before int: a bool is an int in Python
                start.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[key].number_value = value
            else:
                start.hparams[key].string_value = str(value)

        def write(tag: str, data: plugin_data_pb2.HParamsPluginData) -> None:
            data.version = metadata.PLUGIN_DATA_VERSION
            plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
            summary = Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])
            self.writer.file_writer.add_summary(summary)

        write(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start))
        self.scalars(step, metrics)
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        write(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@register_tracker("tensorboard")
class TensorBoardTracker:
    def __init__(self, run: TrackerRun) -> None:
        self.run = run
        self.run_id = str(run.run_dir / "tensorboard")
        self.log = TensorBoardLog(run.run_dir / "tensorboard", purge_step=run.resume_step)

    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.log.scalars(step, metrics)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        self.log.image(tag, image, step)

    def flush(self) -> None:
        self.log.writer.flush()

    def finish(self, summary: dict[str, Any], pictures: list[Path]) -> None:
        """The HPARAMS tab: the config (every scalar key) beside the best and test metrics, labelled with the
        overrides the run was started with."""
        params = {k: v for k, v in self.run.params.items() if k != "resume"}
        metrics = dict(summary.get("test") or {})
        if isinstance(summary.get("best_value"), (int, float)):
            metrics[f"best/{summary['monitor']}"] = summary["best_value"]
        try:
            self.log.hparams(params, metrics, step=int(summary.get("steps") or 0), name=" ".join(self.run.overrides))
        finally:
            self.log.close()

    def end(self, status: str) -> None:
        self.log.close()
