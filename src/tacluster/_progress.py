"""Progress of long work: a tqdm bar on a terminal, plain lines in a log.

A bar written into a log file or a pipe is a stream of carriage returns (one
per update, thousands of them for a training run); there, one line at the
start, one every :attr:`Progress.every_s` seconds with done/total, percent,
elapsed time and ETA, and one at the end are what a reader of the log wants.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``"42 s"``, ``"8 min"``, ``"3.2 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """``with Progress(total, "training heads", "epoch", enabled=progress) as bar: bar.update()``.

    ``enabled=False`` shows nothing; otherwise a tqdm bar when stderr is a
    terminal, else plain lines (``desc: 40/200 epochs (20 %, 12 s, ETA 48 s)``).
    """

    every_s = 30.0

    def __init__(self, total: int, desc: str, unit: str, *, enabled: bool = True, leave: bool = True):
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self.enabled = enabled and total > 0
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, leave=leave)
        self.t0 = self.last = time.perf_counter()

    def __enter__(self) -> "Progress":
        if self.enabled and self.bar is None:
            self.write(f"{self.desc}: {self.total:,} {self.unit}s")
        return self

    def write(self, line: str) -> None:
        """One line on stderr (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def set_postfix(self, **values) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            self.write(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}s "
                       f"({100 * self.done / self.total:.0f} %, {now - self.t0:.0f} s, "
                       f"ETA {duration((self.total - self.done) / max(rate, 1e-9))})")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and exc[0] is None:
            self.write(f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}s in "
                       f"{duration(time.perf_counter() - self.t0)}")


def iter_progress(items: Iterable[T], total: int, desc: str, unit: str, *, enabled: bool,
                  leave: bool = True) -> Iterator[T]:
    """Iterate ``items`` under a :class:`Progress`."""
    with Progress(total, desc, unit, enabled=enabled, leave=leave) as bar:
        for item in items:
            yield item
            bar.update()
