"""Exception groups from our nurseries, as a caller expects them: plain."""

from __future__ import annotations

from typing import NoReturn

import trio


def only_cancelled(exc: BaseException) -> bool:
    """*exc* is a cancellation, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception in a (nested) exception group."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def plain_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What one of our nurseries' *group* stands for, as the caller expects it:
    the one exception in it that is not a cancellation (as raised, even if it is
    a group of the caller's own), or a plain Cancelled if cancellations are all
    there is; the group itself when several things went wrong."""
    others = [e for e in group.exceptions if not only_cancelled(e)]
    if not others:
        return first_leaf(group)
    return others[0] if len(others) == 1 else group


def raise_plain(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise what *group* stands for (see :func:`plain_exception`), with its context."""
    exc = plain_exception(group)
    if exc is group:
        raise group
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, group
