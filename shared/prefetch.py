"""Produce the next items on a thread while the consumer works on the current one."""

from __future__ import annotations

import queue
import threading


def prefetch(items, size: int = 2):
    """Iterate `items` on a background thread, at most `size` ahead; its errors reach the consumer."""
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def work():
        try:
            for item in items:
                q.put(item)
        except BaseException as err:  # surfaced in the consumer
            q.put(err)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
