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


@contextmanager
def tqdm_progress(desc, unit="it"):
    """A ``progress`` callable that drives a tqdm bar (used by the CLI), redrawn at most every
    :func:`bar_interval` seconds (and at the end)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, leave=True, mininterval=bar_interval())

    def update(done, total, what=""):
        if bar.total != total:
            bar.total = total
        if what:
            bar.set_postfix_str(str(what), refresh=False)
        bar.update(done - bar.n)   # (redrawn when the interval has passed)

    try:
        yield update
    finally:
        bar.close()
