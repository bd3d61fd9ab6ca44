"""One way to fan per-item work out over local processes, with a progress bar; the cores no other work is using."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from anime_avatar.core.errors import UserError
from anime_avatar.core.progress import progress_bar

T = TypeVar("T")
R = TypeVar("R")


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """The cores no other work is using: all of them less the 1-minute load average, at least one."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
    return max(1, min(cores, cores - math.floor(load + 0.5)))


def resolve_workers(workers: int) -> int:
    """``0`` means one worker per available core."""
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int = 0,
    desc: str = "",
    initializer: Callable[..., None] | None = None,
    initargs: Iterable[object] = (),
    unit: str = "it",
    workers_key: str = "",
) -> Iterator[R]:
    """Apply ``fn`` to every item in order, over ``workers`` processes (1: in this process).

    Results come back in input order, so output is the same whatever the worker count. A worker process that
    dies (the out-of-memory killer, a crash in native code) is a UserError naming ``workers_key``, the params
    key that sets ``workers``.
    """
    n = resolve_workers(workers)
    bar = progress_bar(total=len(items), desc=desc, unit=unit, leave=False, disable=not desc)
    if n == 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield fn(item)
            bar.update()
        bar.close()
        return
    chunksize = max(1, min(64, len(items) // (n * 8)))
    # fork starts workers in milliseconds with the parent's imports (cv2, animeface) already loaded.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    init_args = (initializer, *initargs)
    # Not multiprocessing.Pool: it replaces a worker that dies and waits for ever for the result it held.
    pool = ProcessPoolExecutor(n, mp_context=context, initializer=_kept_init_error, initargs=init_args)
    finished = False
    try:
        # Chunks submitted by hand, not pool.map: map cancels its futures when left early, and the pool's own
        # thread then fails setting "broken" on them once the workers are terminated (InvalidStateError, printed).
        chunks = [pool.submit(_run_chunk, fn, items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
        for chunk in chunks:
            for result in chunk.result():
                yield result
                bar.update()
        finished = True
    except BrokenProcessPool:
        fewer = f" (with fewer {workers_key} if memory is short)" if workers_key else ""
        raise UserError(
            f"{desc or 'a'} worker process died (killed, e.g. by the out-of-memory killer, or crashed): "
            f"run it again{fewer}"
        ) from None
    finally:
        if not finished:  # an error or a caller that stopped early: the chunks already sent are not waited for
            _terminate_workers(pool)
        pool.shutdown(wait=finished)
    bar.close()


def _run_chunk(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [_unless_init_failed(fn, item) for item in chunk]


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool``'s worker processes now (Python 3.14's ``terminate_workers``; before it, the same by hand):
    shutdown alone cancels only the chunks not yet sent, and the interpreter waits for the rest at exit."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):
            process.terminate()


# A worker's initializer that raised (a detector that cannot be built). multiprocessing.Pool replaced a worker whose
# initializer raised with a new one, for ever (the stage hung, printing the error hundreds of times a second), and
# ProcessPoolExecutor calls the pool broken without the error. The error is kept instead, and raised by the
# worker's first task, which sends it to the parent.
_INIT_ERROR: list[Exception] = []


def _kept_init_error(initializer: Callable[..., None] | None, *args: object) -> None:
    if initializer is None:
        return
    try:
        initializer(*args)
    except Exception as err:
        _INIT_ERROR[:] = [err]


def _unless_init_failed(fn: Callable[[T], R], item: T) -> R:
    if _INIT_ERROR:
        raise _INIT_ERROR[0]
    return fn(item)
