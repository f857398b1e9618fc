"""Module-level parallelism for merges: a few modules in flight on a thread pool, results in order.

torch releases the GIL inside its kernels, so threads over modules use several cores for the
parts of a merge that torch runs on one (a selection, a bincount, small matmuls) without copying
anything between processes. Each worker runs torch single-threaded (`torch.set_num_threads(1)` in
the pool's initializer) so that T module threads do not each spawn T intra-op threads; the
caller's setting is restored when the pool closes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")
Result = TypeVar("Result")


class _Turns:
    """Lets call i of a step run only after call i - 1 finished (a ticket lock in item order)."""

    def __init__(self) -> None:
        self._next = 0
        self._changed = threading.Condition()

    def run(self, ticket: int, step: Callable[[], Result]) -> Result:
        with self._changed:
            self._changed.wait_for(lambda: self._next == ticket)
        try:
            return step()
        finally:
            with self._changed:
                self._next = ticket + 1
                self._changed.notify_all()


def ordered_map(
    prepare: Callable[[Item], Prepared],
    finish: Callable[[Prepared], Result],
    items: Iterable[Item],
    threads: int,
    finish_in_order: bool = False,
) -> Iterator[tuple[Item, Result]]:
    """(item, finish(prepare(item))) for each item, in the items' order, `threads` at a time.

    At most threads + 1 items are in flight, so memory stays a few modules' worth. With
    `finish_in_order`, the `finish` calls run one at a time in item order (for a step that draws
    from a shared random generator: the draws then do not depend on the number of threads), while
    `prepare` still runs in parallel. With one thread nothing is started: a plain loop.
    """
    if threads <= 1:
        for item in items:
            yield item, finish(prepare(item))
        return
    turns = _Turns()

    def work(ticket: int, item: Item) -> Result:
        if not finish_in_order:
            return finish(prepare(item))
        try:
            prepared = prepare(item)
        except BaseException:
            turns.run(ticket, lambda: None)  # pass the turn on, or the next item waits forever
            raise
        return turns.run(ticket, lambda: finish(prepared))

    caller_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=threads, initializer=torch.set_num_threads, initargs=(1,))
    in_flight: deque[tuple[Item, Future[Result]]] = deque()
    try:
        for ticket, item in enumerate(items):
            in_flight.append((item, pool.submit(work, ticket, item)))
            if len(in_flight) > threads:
                done_item, future = in_flight.popleft()
                yield done_item, future.result()
        while in_flight:
            done_item, future = in_flight.popleft()
            yield done_item, future.result()
    finally:
        # Items not yet started are dropped; started ones finish (their turns come: FIFO start order).
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(caller_threads)


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (for many small tensors), then restore."""
    caller_threads = torch.get_num_threads()
    if caller_threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(caller_threads)
