"""Container lifecycle events for ``GetContainerEvents`` (kubelet's evented PLEG)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator

from criadapt import models as m
from criadapt.call import CallContext
from criadapt.errors import ResourceExhausted

log = logging.getLogger("criadapt.runc.events")

#: a subscriber more than this many events behind is dropped (it must re-list)
MAX_BACKLOG = 10_000
_END = object()


class EventBus:
    """Fan-out of events to every open ``GetContainerEvents`` stream."""

    def __init__(self) -> None:
        self._subscribers: list[queue.Queue[object]] = []
        self._lock = threading.Lock()

    def publish(self, event: m.ContainerEventResponse) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber.put_nowait(event)
            except queue.Full:
                log.warning(
                    "dropping a GetContainerEvents subscriber %d events behind", MAX_BACKLOG
                )
                self._drop(subscriber)

    def _drop(self, subscriber: queue.Queue[object]) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
        try:
            while True:
                subscriber.get_nowait()
        except queue.Empty:
            pass
        subscriber.put_nowait(
            ResourceExhausted("events consumer too slow; re-list and resubscribe")
        )

    def close(self) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            with contextlib.suppress(queue.Full):
                subscriber.put_nowait(_END)

    def subscribe(self, call: CallContext | None) -> Iterator[m.ContainerEventResponse]:
        """Events published from now on, until the call ends or the bus closes."""
        subscriber: queue.Queue[object] = queue.Queue(maxsize=MAX_BACKLOG)
        with self._lock:
            self._subscribers.append(subscriber)

        def stream() -> Iterator[m.ContainerEventResponse]:
            try:
                while call is None or not call.done.is_set():
                    try:
                        item = subscriber.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, m.ContainerEventResponse)
                    yield item
            finally:
                with self._lock:
                    if subscriber in self._subscribers:
                        self._subscribers.remove(subscriber)

        return stream()
