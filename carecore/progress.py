"""The progress and stop protocol shared by every long operation.

A long operation takes ``progress`` (called as ``progress(done, total, what)``) and ``stop`` (a
callable returning True when the user asked to stop). The app updates its widgets from
``progress``; the CLI passes :func:`tqdm_progress`; notebooks pass either or nothing.
"""
from __future__ import annotations

from contextlib import contextmanager


class Stopped(Exception):
    """Raised inside an operation when its stop request was honoured."""


def report(progress, done, total, what=""):
    if progress is not None:
        progress(done, total, what)


def check_stop(stop):
    if stop is not None and stop():
        raise Stopped()


def join_messages(*parts):
    """An operation's message from its parts: the non-empty ones, joined by semicolons."""
    return "; ".join(p for p in parts if p)


def counting(run, progress, total, what):
    """``run`` that calls ``progress(done, total, what)`` after every call, ``done`` counting the items
    (the first axis) of every batch run so far. Extra arguments are ignored (``run(batch, k)`` of the
    views of :func:`carecore.prediction.tta.mean_over_views`)."""
    done = [0]

    def counted(batch, *_):
        result = run(batch)
        done[0] += len(batch)
        report(progress, done[0], total, what)
        return result

    return counted


def bar_interval():
    """Seconds between a progress bar's redraws: 0.1 on a terminal or in a notebook, 30 into a file or a pipe
    (a log of a minute's training held thousands of redraws, megabytes)."""
    import sys

    if "ipykernel" in sys.modules:   # a notebook: its bars are widgets, not lines of a log
        return 0.1
    try:
        return 0.1 if sys.stderr.isatty() else 30.0
    except (AttributeError, ValueError):   # (a closed or replaced stream)
        return 30.0


class LazyBar:
    """A tqdm bar drawn at its first count, not when made: an operation that fails before its first step
    leaves no empty bar above its error (a user trial saw "qc: 0 image [00:00]" before every refusal).

    ``write`` prints above the bar (whether it is drawn yet or not); ``total`` may be set before it is."""

    def __init__(self, **options):
        self._options, self._bar = options, None

    @property
    def bar(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(**self._options)
        return self._bar

    @property
    def n(self):
        return self._bar.n if self._bar is not None else 0

    @property
    def total(self):
        return self._bar.total if self._bar is not None else self._options.get("total")

    @total.setter
    def total(self, value):
        if self._bar is None:
            self._options["total"] = value
        else:
            self._bar.total = value

    def update(self, n=1):
        self.bar.update(n)

    def set_postfix_str(self, s="", refresh=True):
        if self._bar is None:   # (drawn with it, at the first count)
            self._options["postfix"] = s
        else:
            self._bar.set_postfix_str(s, refresh=refresh)

    def reset(self, total=None):
        self.bar.reset(total=total)

    @staticmethod
    def write(s, **kwargs):
        from tqdm.auto import tqdm

        tqdm.write(s, **kwargs)

    def close(self):
        if self._bar is not None:
            self._bar.close()


@contextmanager
def tqdm_progress(desc, unit="it"):
    """A ``progress`` callable that drives a tqdm bar (used by the CLI), drawn at the first count (see
    :class:`LazyBar`) and redrawn at most every :func:`bar_interval` seconds (and at the end). A count
    with a new total, or below the last, starts the bar again (the next stage of an operation: its own count and
    rate). ``progress.close()`` closes the bar (where the next stage has a bar of its own)."""
    # (" image": tqdm writes the unit straight after the count and the rate, "6393.76image/s")
    bar = LazyBar(desc=desc, unit=" " + unit.lstrip(), leave=True, mininterval=bar_interval())

    def update(done, total, what=""):
        if what and str(what) in (unit, unit + "s"):   # (the unit again: "1/1 [00:00, 2.97 tile/s, tiles]")
            what = ""
        if what:   # (before a reset, which redraws the bar: with this stage's text)
            bar.set_postfix_str(str(what), refresh=False)
        if bar.total != total or done < bar.n:
            if bar.n:   # (a stage ended: its count and clock no longer the next one's)
                bar.reset(total=total)
            else:
                bar.total = total
        bar.update(done - bar.n)   # (redrawn when the interval has passed)

    update.close = bar.close   # (a stage's bar closed before the next one's is drawn below it)
    try:
        yield update
    finally:
        bar.close()
