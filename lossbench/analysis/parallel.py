"""Reading ledgers in worker processes: the pool, its memory, and the shared arena results come back in.

compare reads gigabytes of ledger, ranges of the files at a time; two processes read it nearly twice as fast
as one. What a range gives back is columns, tens of megabytes of them. Pickled through a pipe they would be
copied three more times into fresh memory of the main process, and fresh memory is dear (on the 2-core
virtual machine of ``benchmarks/compare_scale.py``, first touching a gigabyte costs about three CPU-seconds).
So each range under way gets a slot of one shared arena, mapped before the workers fork: the worker leaves
its columns there, the main process copies them once, into the run's columns, and the slot goes to the
next range.

For the same reason each worker keeps the memory it frees for the next block (``_keep_freed_memory``)
instead of handing it back to the kernel and faulting it in again a moment later.

Nothing here knows what a ledger is: ``lossbench.analysis.read`` says what a task and its arrays are.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import itertools
import mmap
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

WORKERS = min(4, os.cpu_count() or 1)
"""Processes (or threads) reading ledgers at once."""

SERIAL_BYTES = 48 << 20
"""Runs with fewer ledger bytes are read in this thread: below this, starting the workers and handing
results over costs about what the second process saves, or more on a busy machine (12 to 44 MB runs read
faster in one process while another program kept a core busy)."""

ALIGN = 64


@dataclasses.dataclass(frozen=True)
class Shared:
    """An array a worker left in the arena: where it is and what it is."""

    offset: int
    dtype: str
    shape: tuple[int, ...]


class Arena:
    """``slots`` regions of ``slot_bytes`` in memory shared with the workers (anonymous, mapped before they
    fork). A page costs only the first time it is touched: the ranges after the first reuse it."""

    def __init__(self, slots: int, slot_bytes: int) -> None:
        self.slot_bytes = slot_bytes
        self.memory = mmap.mmap(-1, slots * slot_bytes)
        self.buffer = np.frombuffer(self.memory, np.uint8)
        self.free = list(range(slots))

    def store(self, slot: int, arrays: list[np.ndarray]) -> list[Shared] | None:
        """Copy ``arrays`` into ``slot`` (in a worker); None when they do not fit, and then they travel by
        pipe as before."""
        at, refs = slot * self.slot_bytes, []
        end = at + self.slot_bytes
        for array in arrays:
            at = -(-at // ALIGN) * ALIGN
            if at + array.nbytes > end:
                return None
            self.buffer[at : at + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            refs.append(Shared(at, array.dtype.str, array.shape))
            at += array.nbytes
        return refs

    def load(self, refs: list[Shared]) -> list[np.ndarray]:
        """Views of what a worker stored (in the main process): valid until the slot is handed out again."""
        out = []
        for ref in refs:
            dtype = np.dtype(ref.dtype)
            count = int(np.prod(ref.shape, dtype=np.int64))
            out.append(np.frombuffer(self.memory, dtype, count, ref.offset).reshape(ref.shape))
        return out


_arena: Arena | None = None  # in a worker process: the arena it shares with the main process


def worker_arena() -> Arena | None:
    """The arena of this worker process (None in the main process or a thread)."""
    return _arena


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _keep_freed_memory() -> None:
    """glibc returns large freed blocks to the kernel; a worker allocating the same sizes block after
    block then pays page faults each time (most of its system time in a large run). Keep them instead:
    the worker's memory stays at its high-water mark, which is what it had anyway."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: blocks up to 32 MB come from the heap
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def _start_worker(arena: Arena) -> None:
    global _arena
    _arena = arena
    _keep_freed_memory()


@dataclasses.dataclass
class Pool:
    """Where tasks run: ``executor`` None for this thread; ``arena`` None when results come back by pipe
    or by reference (threads); ``range_bytes`` the size of a task that suits them."""

    executor: concurrent.futures.Executor | None
    range_bytes: int
    arena: Arena | None = None


@contextlib.contextmanager
def workers(total_bytes: int, block_bytes: int, ahead: int) -> Iterator[Pool]:
    """This thread for a small run; else worker processes when it is safe to fork (Linux, no other thread
    alive: about 1.5 times faster than threads), with an arena of ``ahead + 1`` slots (the ranges under way
    and the one being copied); else threads (numpy releases the GIL, but handing it over costs)."""
    if WORKERS < 2 or total_bytes < SERIAL_BYTES:
        yield Pool(None, 4 * block_bytes)
    elif sys.platform.startswith("linux") and threading.active_count() == 1:
        range_bytes = 4 * block_bytes
        arena = Arena(ahead + 1, range_bytes)
        context = multiprocessing.get_context("fork")
        try:
            with concurrent.futures.ProcessPoolExecutor(
                WORKERS, mp_context=context, initializer=_start_worker, initargs=(arena,)
            ) as executor:
                yield Pool(executor, range_bytes, arena)
        finally:
            arena.buffer = np.empty(0, np.uint8)  # views into the mapping must go before it closes
            with contextlib.suppress(BufferError):  # a caller still holds a view: the mapping outlives it
                arena.memory.close()
    else:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as executor:
            yield Pool(executor, block_bytes)


def in_order(
    pool: Pool, run: Callable[[Any, int | None], Any], tasks: list[Any], ahead: int
) -> Generator[Any, None, None]:
    """``run(task, slot)`` over ``tasks``, results in order, with up to ``ahead`` tasks under way.

    A result's arena slot (None without an arena) is handed to another task only once the caller asks for
    the next result: by then it has copied what it wanted out of it.
    """
    if pool.executor is None:
        yield from (run(task, None) for task in tasks)
        return
    free = pool.arena.free if pool.arena is not None else None
    pending: collections.deque[tuple[concurrent.futures.Future[Any], int | None]] = collections.deque()
    queue = iter(tasks)

    def submit(task: Any) -> None:
        slot = free.pop() if free else None
        pending.append((pool.executor.submit(run, task, slot), slot))  # type: ignore[union-attr]

    try:
        for task in itertools.islice(queue, ahead):
            submit(task)
        while pending:
            done, slot = pending.popleft()
            for task in itertools.islice(queue, 1):
                submit(task)
            yield done.result()
            if free is not None and slot is not None:
                free.append(slot)
    finally:
        for future, _ in pending:
            future.cancel()
