"""One progress display for every long job: a tqdm bar with ETA on a terminal, plain
periodic lines when the output is a file or a pipe (a log reads "eval: 40% (4000/10000
examples), 52 s, ETA 78 s" every ~10 s or 10 %, never hundreds of carriage returns).

    with Progress(total=len(data), desc="eval", unit="ex", enabled=show) as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

``enabled=True``/``False`` shows it or not; ``enabled=None`` (the default) follows the process
setting, which is off in a library call and on in the ``zspace`` command (``set_enabled``;
``--no-progress`` turns every bar off). Messages go to stderr so results on stdout stay clean.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TextIO

_SETTING: bool | None = None   # None: never set (a library call): only bars asked for explicitly
EVERY_SECONDS = 10.0     # plain lines: at most this far apart (and at every 10 % step)


def set_enabled(on: bool) -> None:
    """Shows every progress display of this process (True) or none at all (False)."""
    global _SETTING
    _SETTING = bool(on)


@contextlib.contextmanager
def showing(on: bool) -> Iterator[None]:
    """``set_enabled(on)`` for the block, the previous setting afterwards."""
    global _SETTING
    before = _SETTING
    _SETTING = bool(on)
    try:
        yield
    finally:
        _SETTING = before


def is_enabled(enabled: bool | None = None) -> bool:
    """Whether a display asked for with ``enabled`` shows, under the process setting."""
    if _SETTING is False:
        return False
    return bool(_SETTING) if enabled is None else bool(enabled)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts ``total`` units of work (None: unknown) and shows rate, elapsed time and ETA."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0,
                 enabled: bool | None = None, stream: TextIO | None = None, every: float | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_enabled(enabled)
        self.every = EVERY_SECONDS if every is None else every
        self.postfix = ""
        self._start = time.perf_counter()
        self._start_n = initial
        self._last_time, self._last_tenth = self._start, self._tenth(initial)
        self._bar = None
        if self.enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True, leave=False)

    def _tenth(self, n: int) -> int:
        return int(10 * n / self.total) if self.total else 0

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc, refresh=False)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now, tenth = time.perf_counter(), self._tenth(self.n)
        if now - self._last_time >= self.every or tenth > self._last_tenth:
            self._last_time, self._last_tenth = now, tenth
            self._line(now)

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None: unknown total or nothing done yet)."""
        done = self.n - self._start_n
        if not self.total or done <= 0:
            return None
        return (time.perf_counter() - self._start) / done * max(self.total - self.n, 0)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        if self.total:
            head = f"{self.desc}: {100 * self.n / self.total:.0f}% ({self.n}/{self.total} {self.unit})"
        else:
            head = f"{self.desc}: {self.n} {self.unit}"
        eta = self.eta()
        tail = f", {_duration(elapsed)}" + (f", ETA {_duration(eta)}" if eta is not None and self.n < (self.total or 0)
                                            else "")
        self.write(head + tail + (f"; {self.postfix}" if self.postfix else ""))

    def write(self, message: str) -> None:
        """A line above the bar (or a plain line), shown only while enabled."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable, desc: str, total: int | None = None, unit: str = "it", enabled: bool | None = None,
          size=None) -> Iterator:
    """Yields ``items`` while counting them (``size(item)`` units each: e.g. a batch's rows)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with Progress(total, desc, unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(size(item) if size is not None else 1)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
