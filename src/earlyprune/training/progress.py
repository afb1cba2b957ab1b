"""Per-epoch progress: a tqdm bar on a terminal (loss, accuracy, images/s), plain log lines otherwise."""

from __future__ import annotations

import sys
from typing import Callable, TextIO


def epoch_label(epoch: int, epochs: int) -> str:
    """``epoch 2 (3/10)``: the epoch's number (from 0, as everywhere in earlyprune) and how many of the run's
    epochs it completes."""
    width = len(str(max(epochs - 1, 0)))
    done = f"({epoch + 1}/{epochs})"
    return f"epoch {epoch:{width}d} {done:>{len(str(epochs)) * 2 + 3}}"  # aligned from epoch 0 to the last


class Progress:
    """``mode``: "bar", "log", "none", or "auto" (a bar when ``stream`` is a terminal, log lines otherwise)."""

    def __init__(self, mode: str = "auto", log: Callable[[str], None] = print, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if stream.isatty() else "log"
        if mode == "bar":
            try:
                import tqdm  # noqa: F401
            except ImportError:  # pragma: no cover - tqdm is a dependency
                mode = "log"
        self.mode, self.stream, self._log = mode, stream, log
        self._bar = None

    def log(self, message: str) -> None:
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self._log(message)

    def start_epoch(self, epoch: int, epochs: int, batches: int, phase: str) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=batches, desc=f"{epoch_label(epoch, epochs)} {phase}", file=self.stream,
                             leave=True, dynamic_ncols=True, unit="batch")

    def update(self, batches: int, loss: float, accuracy: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(batches)
            self._bar.set_postfix_str(f"loss {loss:.3f} acc {accuracy:6.2%} {images_per_s:,.0f} img/s", refresh=False)

    def end_epoch(self, line: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.log(line)
