"""trainkit's Optuna search as a Hydra sweeper (hydra/sweeper=optuna: configs/hydra/sweeper/optuna.yaml).

Hydra accepts sweepers only from its `hydra_plugins` namespace package, and imports every module in it whenever it
starts: so this one imports nothing heavy, and the work is in trainkit.rundirs.search.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str, study_name: str, storage: str | None, n_trials: int, n_jobs: int,
                 sampler: Any, params: Any) -> None:
        from trainkit.rundirs.search import SearchSettings

        self.settings = SearchSettings.of({"direction": direction, "study_name": study_name, "storage": storage,
                                           "n_trials": n_trials, "n_jobs": n_jobs, "sampler": sampler,
                                           "params": params})

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from trainkit.rundirs.search import Search

        Search(self.settings, self.launcher, self.config).run(list(arguments))
