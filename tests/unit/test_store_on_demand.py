"""`storeprocess.OnDemand`: light loads are written here, a backlog starts the child, an idle
spell stops it again."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from vodpoller.errors import StorageError
from vodpoller.store import Answer, EventStore, Release, SaveResult, SettleResult
from vodpoller.storeprocess import OnDemand, StoreProcess

NOTHING_SETTLED = cast(SettleResult, None)


class Writer:
    """Stands for an `EventStore` or a `StoreProcess`: records who wrote what."""

    def __init__(self, name: str, journal: list[tuple[str, int]], *, fails: bool = False):
        self.name, self.journal, self.fails = name, journal, fails
        self.started = self.closed = 0

    def start(self) -> Writer:
        if self.fails:
            raise StorageError("the store process could not open the database: no")
        self.started += 1
        return self

    def write(
        self,
        answers: Sequence[Answer],
        confirmed: Sequence[int],
        released: Sequence[Release],
        *,
        holder: str | None,
    ) -> tuple[list[SaveResult], SettleResult]:
        self.journal.append((self.name, len(answers)))
        return [], NOTHING_SETTLED

    def close(self) -> None:
        self.closed += 1


def answers(count: int) -> list[Answer]:
    return [cast(Answer, object())] * count


def on_demand(
    journal: list[tuple[str, int]], *, idle: float = 60.0, fails: bool = False
) -> tuple[OnDemand, list[Writer]]:
    children: list[Writer] = []

    def make_child() -> StoreProcess:
        children.append(Writer(f"child{len(children)}", journal, fails=fails))
        return cast(StoreProcess, children[-1])

    local = cast(EventStore, Writer("local", journal))
    return OnDemand(local, make_child, busy_answers=2, idle_seconds=idle), children


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def write(store: OnDemand, count: int) -> None:
    store.write(answers(count), [], [], holder="me")


def test_single_answers_are_written_here_and_start_nothing() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal)

    for _ in range(5):
        write(store, 1)

    assert journal == [("local", 1)] * 5
    assert children == []
    assert not store.child_running
    store.close()


def test_a_backlog_starts_the_child_and_later_writes_go_to_it() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal)

    write(store, 2)  # the backlog: written here while the child starts
    wait_for(lambda: store.child_running)
    write(store, 1)
    write(store, 3)

    assert journal == [("local", 2), ("child0", 1), ("child0", 3)]
    assert len(children) == 1
    assert children[0].started == 1
    store.close()
    assert children[0].closed == 1
    assert not store.child_running


def test_one_child_at_a_time_however_many_busy_writes_come_while_it_starts() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal)
    gate = threading.Event()
    original = store._make_child

    def slow_child() -> StoreProcess:
        gate.wait(5)
        return original()

    store._make_child = slow_child
    for _ in range(4):
        write(store, 5)
    gate.set()
    wait_for(lambda: store.child_running)

    assert len(children) == 1
    store.close()


def test_the_child_stops_after_an_idle_spell_and_starts_again_on_the_next_backlog() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal, idle=0.2)

    write(store, 2)
    wait_for(lambda: store.child_running)
    wait_for(lambda: not store.child_running, seconds=3)
    # The watcher lets go of the child first (no write takes it then), then closes it.
    wait_for(lambda: children[0].closed == 1)
    write(store, 1)  # light: here, and no new child
    assert journal[-1] == ("local", 1)
    assert len(children) == 1

    write(store, 2)
    wait_for(lambda: store.child_running)
    assert len(children) == 2
    store.close()
    assert children[1].closed == 1


def test_light_writes_through_the_child_do_not_keep_it() -> None:
    journal: list[tuple[str, int]] = []
    store, _children = on_demand(journal, idle=0.3)

    write(store, 2)
    wait_for(lambda: store.child_running)
    started = time.monotonic()
    while store.child_running:
        write(store, 1)
        assert time.monotonic() - started < 3, "single answers kept the child alive"
        time.sleep(0.02)
    assert ("child0", 1) in journal
    store.close()


def test_busy_writes_keep_the_child() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal, idle=0.3)

    write(store, 2)
    wait_for(lambda: store.child_running)
    for _ in range(40):  # 0.8 s of busy writes, more than twice the idle spell
        write(store, 2)
        time.sleep(0.02)
        assert store.child_running
    store.close()
    assert len(children) == 1


def test_a_child_that_cannot_start_leaves_the_writes_here() -> None:
    journal: list[tuple[str, int]] = []
    store, _children = on_demand(journal, fails=True)

    write(store, 2)
    wait_for(lambda: store._starting is None)
    write(store, 1)

    assert not store.child_running
    assert journal == [("local", 2), ("local", 1)]
    store.close()


def test_after_close_a_backlog_starts_no_child() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal)
    store.close()

    write(store, 3)

    assert children == []
    assert journal == [("local", 3)]


def test_a_child_that_comes_up_after_close_is_stopped() -> None:
    journal: list[tuple[str, int]] = []
    store, children = on_demand(journal)
    gate = threading.Event()
    original = store._make_child

    def slow_child() -> StoreProcess:
        gate.wait(5)
        return original()

    store._make_child = slow_child
    write(store, 2)
    closer = threading.Thread(target=store.close)
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(5)

    assert not closer.is_alive()
    assert children[0].closed == 1
    assert not store.child_running


def test_a_child_slower_to_start_than_the_idle_spell_is_kept_for_a_whole_spell() -> None:
    journal: list[tuple[str, int]] = []
    store, _children = on_demand(journal, idle=0.3)
    gate = threading.Event()
    original = store._make_child

    def slow_child() -> StoreProcess:
        gate.wait(5)
        return original()

    store._make_child = slow_child
    write(store, 2)
    time.sleep(0.5)  # longer than the idle spell
    gate.set()
    wait_for(lambda: store._starting is None)
    time.sleep(0.1)

    assert store.child_running
    store.close()
