"""Logs a person can read: one header per job attempt, progress as plain lines.

A job's log (Snakemake's `log:` file) starts every attempt with a header naming the time, the
rule, run and seed, the fingerprint of the job's settings and the flowprobe version and commit.
Long loops report progress through `with_progress()`: a tqdm bar on an interactive terminal, and in
a log file one plain line every `PROGRESS_EVERY` seconds (never carriage-return bars).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import flowprobe
from flowprobe.fingerprint import fingerprint

PROGRESS_EVERY = 30.0  # seconds between progress lines in a log file
HEADER_MARK = "==== flowprobe"
T = TypeVar("T")
log = logging.getLogger("flowprobe.progress")


def with_progress(
    items: Iterable[T],
    desc: str,
    *,
    enabled: bool = True,
    total: int | None = None,
    size: Callable[[T], int] | None = None,
    step: str = "batch",
    unit: str = "img",
    every: float = PROGRESS_EVERY,
) -> Iterator[T]:
    """Yield `items` and report how far the loop is.

    On an interactive terminal (stderr is a tty) a tqdm bar; otherwise, every `every` seconds,
    one log line "`desc`: `step` k/n, R `unit`/s, ETA h:mm:ss" (and a last line once a loop
    that reported took its time). Reading the clock is all it does per item: no device sync.

    Args:
        items: the loop's iterable (its `len()` gives n when it has one).
        desc: what the loop does, e.g. "epoch 3/15" or "dump train".
        enabled: False yields the items silently.
        total: n when `items` has no `len()`.
        size: units in one item (e.g. images in a batch: `lambda b: len(b[1])`); default 1.
        step: what one item is called in the line ("batch", "probe point", ...).
        unit: name of the unit for the rate.
        every: seconds between two lines in a log file.

    Returns:
        An iterator over `items`.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    if not enabled:
        yield from items
    elif sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, file=sys.stderr, mininterval=1)
    else:
        yield from _logged(items, desc, total, size, step, unit, every)


def _logged(items, desc, total, size, step, unit, every):
    start = last = time.monotonic()
    units, k = 0, 0
    for k, item in enumerate(items, 1):
        yield item
        units += size(item) if size else 1
        now = time.monotonic()
        if now - last >= every:
            log.info("%s", _progress_line(f"{desc}: {step}", k, total, units, unit, now - start))
            last = now
    elapsed = time.monotonic() - start
    if last > start:  # the loop reported before: say it ended
        log.info("%s done in %s (%s)", desc, _clock(elapsed), _speed(units, unit, elapsed))


def _speed(units: float, unit: str, elapsed: float) -> str:
    """'R unit/s', or 'S s per unit' for slow stages (a probe point takes seconds)."""
    rate = units / max(elapsed, 1e-9)
    return f"{rate:.0f} {unit}/s" if rate >= 1 else f"{1 / max(rate, 1e-9):.1f} s per {unit.rstrip('s')}"


def _progress_line(desc, k, total, units, unit, elapsed) -> str:
    line = f"{desc} {k}/{total if total is not None else '?'}, {_speed(units, unit, elapsed)}"
    if total:
        line += f", ETA {_clock(elapsed / k * (total - k))}"
    return line


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def code_version() -> str:
    """flowprobe's version and, in a git checkout, its commit ('+dirty' with local changes)."""
    root = Path(flowprobe.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty=+dirty", "--abbrev=10"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "no git checkout"
    return f"flowprobe {flowprobe.__version__} (commit {commit})"


def job_header(rule: str, wildcards: dict, settings: dict, attempt: int) -> str:
    """The two header lines that open one attempt of a job in its log.

    Args:
        rule: the Snakemake rule (or stage) name.
        wildcards: e.g. {"run": "vgg16", "seed": "0"}.
        settings: everything the job was given (its params); fingerprinted canonically.
        attempt: 1 for a new log, n when n − 1 attempts are already in the file.

    Returns:
        Text ending in a newline.
    """
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = " ".join(f"{k} {v}" for k, v in wildcards.items()) or "-"
    again = f" (attempt {attempt}; earlier attempts above)" if attempt > 1 else ""
    return (
        f"{HEADER_MARK} {rule} | {where} | {now}{again}\n"
        f"{HEADER_MARK} settings {fingerprint(settings)} | {code_version()}\n"
    )


def previous_attempts(log_path: str | Path) -> int:
    """How many job headers `log_path` already holds (0 when it is new)."""
    path = Path(log_path)
    if not path.exists():
        return 0
    with path.open(errors="replace") as fh:
        return sum(line.startswith(f"{HEADER_MARK} settings ") for line in fh)


def setup_logging(log_path: str | Path, threads: int | None = None) -> logging.Logger:
    """Send logging and progress bars (stderr) of this job to its Snakemake log file.

    `threads` (the rule's `threads:`) caps torch's CPU threads so parallel jobs do not
    oversubscribe the cores. This module imports no torch: table and figure jobs run without it.
    """
    torch = sys.modules.get("torch")  # only jobs that use torch have imported it; no import here
    if threads and torch is not None:
        torch.set_num_threads(threads)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    return logging.getLogger("flowprobe")


def start_job(sm) -> logging.Logger:
    """Start a Snakemake job's log: a header for this attempt, then logging and progress.

    Snakemake deletes a job's log before it reruns the job, so each log usually holds one
    attempt; a log that already holds some (a job run by hand twice) gets a new section.

    Args:
        sm: the `snakemake` object of a script (its rule, wildcards, params, log, threads).

    Returns:
        The "flowprobe" logger.
    """
    attempt = previous_attempts(sm.log[0]) + 1
    logger = setup_logging(sm.log[0], sm.threads)
    sys.stderr.write(job_header(sm.rule, dict(sm.wildcards.items()), dict(sm.params.items()), attempt))
    return logger
