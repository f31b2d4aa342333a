"""``GetContainerEvents`` (v1 only): the lifecycle events of a container, in order."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import CriError, Unimplemented
from criadapt.testing.contract.helpers import raw_stream
from criadapt.testing.plugin import ContainerFactory

Event = m.ContainerEventType
#: how long the subscription stays open at most
STREAM_SECONDS = 20.0
#: time for the server to register the subscription before the test acts
SUBSCRIBE_SECONDS = 0.5


class Subscription:
    """Reads ``GetContainerEvents`` in a thread until ``wanted`` container has sent ``last``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.events: queue.Queue[m.ContainerEventResponse | BaseException | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.stop = threading.Event()

    def _read(self) -> None:
        try:
            for event in raw_stream(
                self.endpoint, "GetContainerEvents", m.GetEventsRequest(), timeout=STREAM_SECONDS
            ):
                self.events.put(event)
                if self.stop.is_set():
                    break
        except BaseException as exc:  # handed to the test thread
            self.events.put(exc)
        finally:
            self.events.put(None)

    def __enter__(self) -> Subscription:
        self.thread.start()
        time.sleep(SUBSCRIBE_SECONDS)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()

    def collect(self, container_id: str, last: m.ContainerEventType) -> list[m.ContainerEventType]:
        """The event types of ``container_id`` until ``last`` (or the stream's end)."""
        seen: list[m.ContainerEventType] = []
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if item.container_id == container_id:
                seen.append(item.container_event_type)
                if item.container_event_type == last:
                    break
        return seen


@pytest.mark.requires("container_events")
def test_lifecycle_events(
    cri: Client, cri_endpoint: str, container_factory: ContainerFactory
) -> None:
    with Subscription(cri_endpoint) as subscription:
        container = container_factory(start=True)
        cri.stop_container(container_id=container.id, timeout=0)
        cri.remove_container(container_id=container.id)
        seen = subscription.collect(container.id, Event.CONTAINER_DELETED_EVENT)
    assert seen == [
        Event.CONTAINER_CREATED_EVENT,
        Event.CONTAINER_STARTED_EVENT,
        Event.CONTAINER_STOPPED_EVENT,
        Event.CONTAINER_DELETED_EVENT,
    ]


@pytest.mark.requires("container_events")
def test_events_carry_the_sandbox_status(
    cri: Client, cri_endpoint: str, container_factory: ContainerFactory
) -> None:
    with Subscription(cri_endpoint) as subscription:
        container = container_factory(start=True)
        item = None
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            got = subscription.events.get(timeout=STREAM_SECONDS)
            if got is None or isinstance(got, BaseException):
                raise AssertionError(f"the event stream ended: {got!r}")
            if got.container_id == container.id:
                item = got
                break
    assert item is not None, "no event for the container"
    assert item.created_at > 0
    assert item.pod_sandbox_status is not None
    assert item.pod_sandbox_status.id == container.sandbox.id


def test_events_are_streamed_or_unimplemented(cri_endpoint: str) -> None:
    """Without the capability: UNIMPLEMENTED, or a stream that stays open; nothing else."""
    try:
        for _ in raw_stream(cri_endpoint, "GetContainerEvents", m.GetEventsRequest(), timeout=0.5):
            pass
    except Unimplemented:
        pass
    except CriError as exc:
        raise AssertionError(f"GetContainerEvents answered {exc.code}: {exc}") from exc
