"""A run's record under its output directory: `run.json`, `metrics.csv` and the job's lock.

Analysis reads these, never W&B, so a study can be fitted with no network (see conventions.md).
Every file here is written whole or not at all (`write_atomic`), and a `running` record is told
from a dead job's by the job's lock (`run_status`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("scalinglab")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".job.lock"
# The first columns of metrics.csv, in order; other logged metrics follow, sorted.
METRIC_COLUMNS = ["step", "tokens", "flops", "lr", "train/loss", "val/loss", "perf/tokens_per_sec"]


# ---- whole files or none ---------------------------------------------------------------------------


def no_space(err: OSError, path: Path) -> OSError:
    """ENOSPC as the message a user acts on; other errors unchanged."""
    if err.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on {path}")
    return err


def write_atomic(
    path: Path,
    write: Callable[[IO[bytes]], None],
    before_replace: Callable[[], None] | None = None,
) -> None:
    """`write` to a temporary file beside `path`, then rename it over `path`.

    The temporary file is in the same directory, so the rename is atomic (never a copy across
    filesystems), and it is created with the umask's permissions (not mkstemp's 0600: others on a
    shared disk read records). On any failure the temporary file is removed and `path` is as it
    was; a full disk raises OSError("no space left on <path>"). `before_replace` runs once the
    new file is whole (to keep the old one under another name, say).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise no_space(err, path) from err
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomic(Path(path), lambda f: f.write(text.encode()))


# ---- run.json ------------------------------------------------------------------------------------


class DamagedRecord(ValueError):
    """A run.json that is not a JSON object (truncated, overwritten)."""


def read_run(output_dir: Path) -> dict[str, Any] | None:
    """The job's run.json; None when it has none. Raises DamagedRecord when it is unreadable."""
    path = Path(output_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedRecord(f"{path}: {err}") from err
    if not isinstance(record, dict):
        raise DamagedRecord(f"{path}: not a JSON object")
    return record


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file out of the way (kept for inspection), and say so."""
    aside = path.with_name(f"{path.name}.damaged")
    os.replace(path, aside)
    log.warning(f"{path} is damaged ({why}): set aside as {aside.name}")
    return aside


# ---- the job's lock: one process per job directory -----------------------------------------------


def job_lock(output_dir: Path) -> FileLock:
    """The lock a job holds while it runs (an OS lock: released when its process dies)."""
    return FileLock(Path(output_dir) / LOCK_FILE, is_singleton=False)


@contextlib.contextmanager
def holding(output_dir: Path) -> Iterator[bool]:
    """Take the job's lock if no other process holds it; yields whether it was taken."""
    lock = job_lock(output_dir)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def lock_held(output_dir: Path) -> bool:
    """Whether a live process (this one included) holds the job's lock."""
    if not (Path(output_dir) / LOCK_FILE).exists():
        return False
    with holding(output_dir) as taken:
        return not taken


def run_status(output_dir: Path) -> str:
    """The job's status as a reader should see it: its record's, except that a `running` record
    whose lock nobody holds is `lost` (its process is gone), an unreadable one `damaged` and a
    missing one `missing`."""
    try:
        record = read_run(output_dir)
    except DamagedRecord:
        return "damaged"
    if record is None:
        return "missing"
    status = str(record.get("status"))
    if status == "running" and not lock_held(output_dir):
        return "lost"
    return status


def git_state(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's repository, or (None, None) outside one."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_lost(output_dir: Path, error: str) -> None:
    """A job whose process died before it could finish its record (killed, its node lost): a
    run.json still `running` becomes `failed`, so that no reader waits for it."""
    with contextlib.suppress(DamagedRecord):
        record = read_run(Path(output_dir))
        if record is not None and record.get("status") == "running":
            lost = {**record, "status": "failed", "error": error, "ended_at": now_iso()}
            write_json_atomic(Path(output_dir) / RUN_FILE, lost)


# ---- metrics.csv ---------------------------------------------------------------------------------


def _parsed(columns: list[str], line: str) -> dict[str, str] | None:
    """A metrics.csv line as a row: as many fields as columns, every one a number or empty, and
    an integer step; None otherwise."""
    fields = next(csv.reader([line]), [])
    if len(fields) != len(columns):
        return None
    row = dict(zip(columns, fields, strict=True))
    try:
        numbers = [float(value) for value in fields if value != ""]
        step = float(row["step"])
    except ValueError:
        return None
    return row if numbers and step == int(step) else None


class MetricsCSV(Logger):
    """metrics.csv, one row per logged step: train and validation figures of a step share a row.

    Each row is on disk as soon as it is logged: a job resumed from its checkpoint of step S goes
    on at S + 1 and never logs S again, so nothing logged may wait for a later step. On resume,
    `repair` drops the rows past the checkpoint's step (no step is counted twice) and any row that
    does not parse (a torn write, a stray edit), naming them in a warning.
    """

    def __init__(self, output_dir: str | Path):
        super().__init__()
        self.path = Path(output_dir) / METRICS_FILE
        self._columns: list[str] | None = None  # the header on disk, and its last step
        self._last_step = -1

    name = "metrics_csv"
    version = ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    def read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.exists():
            return list(METRIC_COLUMNS), []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or METRIC_COLUMNS), list(reader)

    def _rewrite(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, lambda f: f.write(buffer.getvalue().encode()))
        self._columns = None  # read again when next needed

    @rank_zero_only
    def repair(self, step: int) -> None:
        """Keep the rows up to `step` (a checkpoint's) that parse; warn naming the others."""
        if not self.path.exists():
            return
        lines = self.path.read_bytes().decode(errors="replace").replace("\0", "").splitlines()
        columns = next(csv.reader(lines[:1]), [])
        if "step" not in columns:
            set_aside(self.path, "no header with a step column")
            return
        kept, dropped, past = [], [], []
        for number, line in enumerate(lines[1:], start=2):
            row = _parsed(columns, line)
            if row is None:
                dropped.append(f"line {number} {line[:60]!r}")
            elif int(float(row["step"])) > step:
                past.append(row["step"])
            else:
                kept.append(row)
        if dropped:
            log.warning(f"{self.path}: dropped unparsable rows: {'; '.join(dropped)}")
        if past:
            log.info(f"{self.path}: dropped rows past step {step} (steps {', '.join(past)})")
        if dropped or past:
            self._rewrite(columns, kept)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the config lives in .hydra/ and run.json

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row: dict[str, Any] = {"step": int(step or 0)}
        row.update({k: float(v) for k, v in metrics.items() if k != "epoch"})
        if self._columns is None:
            columns, existing = self.read()
            self._columns = columns
            self._last_step = int(float(existing[-1]["step"])) if existing else -1
        new = sorted(set(row) - set(self._columns))
        if self.path.exists() and not new and row["step"] > self._last_step:
            with self.path.open("a", newline="") as f:  # the common case: a new step
                csv.DictWriter(f, self._columns).writerow(row)
            self._last_step = row["step"]
            return
        # The first row, a new metric, or a step already written (its validation): merge, rewrite.
        columns, existing = self.read()
        merged = {int(float(r["step"])): {k: v for k, v in r.items() if v != ""} for r in existing}
        merged.setdefault(row["step"], {}).update(row)
        self._rewrite(columns + new, [merged[s] for s in sorted(merged)])
