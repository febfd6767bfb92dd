"""Hydra's basic sweeper with every job planned before anything is launched or written, and config
files whose YAML errors read as one line that starts with the file and line."""

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.core_plugins.file_config_source import (
    FileConfigSource as HydraFileConfigSource,
)
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigResult

from scalinglab.sweeping import preflight


class PreflightSweeper(BasicSweeper):
    def split_arguments(
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        """The sweep's batches of jobs, once every job of every batch is planned (BasicSweeper
        writes the sweep directory next, and checks only a batch at a time)."""
        batches = super().split_arguments(overrides, max_batch_size)
        jobs = [job for batch in batches for job in batch]
        preflight(self.config, self.hydra_context.config_loader, jobs, _without_values(overrides))
        return batches


def _without_values(overrides: list[Override]) -> list[str]:
    """The sweep overrides that give no value (e.g. `seed=range(0,0)`): a grid of no jobs."""
    return [
        o.input_line or o.key_or_group
        for o in overrides
        if o.is_discrete_sweep() and not list(o.sweep_string_iterator())
    ]


class FileConfigSource(HydraFileConfigSource):
    """Hydra's file:// config source; a YAML syntax error becomes `FILE:LINE:COLUMN: problem`
    (Hydra prints the parser's traceback, ~90 lines, with the file and line only at the end)."""

    def load_config(self, config_path: str) -> ConfigResult:
        try:
            return super().load_config(config_path)
        except yaml.MarkedYAMLError as err:
            raise ConfigCompositionException(yaml_error_line(err)) from None


def yaml_error_line(err: yaml.MarkedYAMLError) -> str:
    """`FILE:LINE:COLUMN: YAML syntax error: what` (where the parser gave up, and where the
    construct it was reading began)."""
    mark = err.problem_mark or err.context_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark else "a config file"
    began = err.context_mark if err.context_mark and err.context_mark is not mark else None
    context = f"{err.context} from line {began.line + 1}" if began else err.context
    return f"{where}: YAML syntax error: {'; '.join(str(s) for s in (err.problem, context) if s)}"


# Hydra keeps the first class registered for a scheme and offers no way to replace it.
SourcesRegistry.instance().types[FileConfigSource.scheme()] = FileConfigSource
