"""Progress bars for long jobs: tqdm's when it is installed (``pip install
'fastmlp[progress]'``), else one line on stderr rewritten in place. Only made when asked
for; ``bar(..., enabled=False)`` is None, and callers skip it."""

from __future__ import annotations

import sys
import time


def to_terminal() -> bool:
    """Whether stderr, where bars are drawn, is a terminal."""
    return sys.stderr.isatty()


def bar(total, desc, enabled, leave=False):
    """A progress bar over ``total`` rows, or None when not ``enabled``. ``update(n,
    loss=None)`` advances it by n rows (and shows the running loss); ``close()`` ends
    it, and clears it unless ``leave``."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _Line(total, desc, leave)
    return _Tqdm(tqdm(total=total, unit="rows", unit_scale=True, desc=desc, leave=leave,
                      file=sys.stderr))


class _Tqdm:
    def __init__(self, bar):
        self._bar = bar

    def update(self, n, loss=None):
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.update(n)

    def close(self):
        self._bar.close()


class _Line:
    """``desc: done/total rows, rows/s, loss, ETA``, rewritten in place on stderr."""

    def __init__(self, total, desc, leave):
        self.total, self.desc, self.leave, self.done = total, desc, leave, 0
        self.start = time.perf_counter()

    def update(self, n, loss=None):
        self.done += n
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = f"\r{self.desc}: {self.done:,}/{self.total:,} rows, {rate:,.0f} rows/s"
        if loss is not None:
            text += f", loss {loss:.4f}"
        text += f", ETA {eta:.0f} s"
        print(text, end="", file=sys.stderr, flush=True)

    def close(self):
        # what follows (an epoch's verbose line) starts on a clean line
        end = "\n" if self.leave else "\r\033[K"
        print(end, end="", file=sys.stderr, flush=True)
