"""Hydra's basic sweeper with every job planned before anything is launched or written, and config
files whose mistakes read as one line that starts with the file: a YAML error (with its line), a
YAML list, a sweep= (or experiment=, hparams=...) file without `# @package _global_`, a defaults
list that includes its own file."""

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra._internal import defaults_list
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.core_plugins.file_config_source import (
    FileConfigSource as HydraFileConfigSource,
)
from hydra._internal.core_plugins.importlib_resources_config_source import (
    ImportlibResourcesConfigSource as HydraPackageConfigSource,
)
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from hydra.plugins.config_source import ConfigResult
from omegaconf import ListConfig

from scalinglab.guards import global_groups
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


class CheckedConfigs:
    """A config source whose files are refused in one line, naming the file, where Hydra prints
    the parser's traceback (~90 lines, the file and line only at the end) or composes them wrong."""

    def load_config(self, config_path: str) -> ConfigResult:
        try:
            result = super().load_config(config_path)  # type: ignore[misc]
        except yaml.MarkedYAMLError as err:
            raise ConfigCompositionException(yaml_error_line(err)) from None
        if problem := misplaced(config_path, result):
            raise ConfigCompositionException(f"{self.file(config_path)}: {problem}")
        return result

    def file(self, config_path: str) -> str:
        """Where the config lies, for the message."""
        raise NotImplementedError


class FileConfigSource(CheckedConfigs, HydraFileConfigSource):
    """Hydra's file:// config source (hydra.searchpath), checked."""

    def file(self, config_path: str) -> str:
        return str(Path(self.path, self._normalize_file_name(config_path)).resolve())


class ImportlibResourcesConfigSource(CheckedConfigs, HydraPackageConfigSource):
    """Hydra's pkg:// config source (scalinglab's own conf/ and sweeps/), checked. Named as
    Hydra's own: its plugin scan (in an installed wheel) registers each ConfigSource it finds, and
    refuses a second class of another name for a scheme."""

    def file(self, config_path: str) -> str:
        return str(resources.files(self.path).joinpath(self._normalize_file_name(config_path)))


def misplaced(config_path: str, result: ConfigResult) -> str | None:
    """What keeps a config file from composing as it reads, or None."""
    if isinstance(result.config, ListConfig):
        return "a YAML list, not a config: a config file is a mapping of keys"
    group = config_path.rpartition("/")[0]
    if group not in global_groups() or result.header.get("package") == "_global_":
        return None
    if not result.config:  # not even a defaults list
        return f"an empty file: a {group}= file starts with `# @package _global_`, then its keys"
    return (
        f"no `# @package _global_` line: a {group}= file sets keys of the whole config, and "
        f"without that first line Hydra puts them under `{group}.`"
    )


def yaml_error_line(err: yaml.MarkedYAMLError) -> str:
    """`FILE:LINE:COLUMN: YAML syntax error: what` (where the parser gave up, and where the
    construct it was reading began)."""
    mark = err.problem_mark or err.context_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark else "a config file"
    began = err.context_mark if err.context_mark and err.context_mark is not mark else None
    context = f"{err.context} from line {began.line + 1}" if began else err.context
    return f"{where}: YAML syntax error: {'; '.join(str(s) for s in (err.problem, context) if s)}"


def _refuse_cycles() -> None:
    """Make Hydra refuse a config whose defaults list leads back to it: Hydra follows it until
    Python's recursion limit (a 2,500-line RecursionError). Hydra's private API, wrapped once."""
    expand = defaults_list._create_defaults_tree_impl
    if getattr(expand, "_refuses_cycles", False):
        return

    def checked(*args: Any, **kwargs: Any) -> Any:
        node = kwargs["root"] if "root" in kwargs else args[1]
        chain = []
        while node is not None:
            chain.append(_config_path(node.node))
            node = node.parent
        if chain[0] is not None and chain[0] in chain[1:]:
            cycle = " -> ".join(reversed(chain[: chain.index(chain[0], 1) + 1]))
            raise ConfigCompositionException(f"{chain[0]} includes itself: defaults {cycle}")
        return expand(*args, **kwargs)

    checked._refuses_cycles = True  # type: ignore[attr-defined]
    defaults_list._create_defaults_tree_impl = checked


def _config_path(default: Any) -> str | None:
    """A defaults list entry's config (e.g. sweep/mine), or None where it names none yet."""
    try:
        return None if default.is_virtual() else default.get_config_path()
    except Exception:  # noqa: BLE001 (an entry still missing its choice, an interpolation)
        return None


_refuse_cycles()
# Hydra keeps the first class registered for a scheme and offers no way to replace it.
for source in (FileConfigSource, ImportlibResourcesConfigSource):
    SourcesRegistry.instance().types[source.scheme()] = source
