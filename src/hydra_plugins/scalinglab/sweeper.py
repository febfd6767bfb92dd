"""Hydra's basic sweeper, with every job's plan checked before anything is launched."""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from scalinglab.sweeping import preflight


class PreflightSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        preflight(self.config, self.hydra_context.config_loader, batch)
