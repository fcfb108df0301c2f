"""The commit discipline of ``shared.messaging.ordered``, on its own: whatever fails and
however often, what commits does so in the order delivered, and only what fails alone
every time is set aside. (Consumers on real PostgreSQL and RabbitMQ: test_messaging.py
and tests/matching/integration/test_shard_failures.py.)"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.messaging import ordered
from shared.messaging.envelope import Envelope


@dataclass
class _Channel:
    is_closed: bool = False


@dataclass
class _Message:
    """What ``commit_in_order`` reads of a delivery's message: its channel and id; and
    whether it was acknowledged."""

    message_id: str
    channel: _Channel
    acked: bool = False

    async def ack(self) -> None:
        self.acked = True


@dataclass
class Store:
    """A transactional store: a batch commits whole or not at all."""

    poison: set[int]
    transient_failures: int  # the next commits that fail with a serialization failure
    channel: _Channel = field(default_factory=_Channel)
    close_after_failures: int | None = None
    committed: list[int] = field(default_factory=list)
    set_aside: list[int] = field(default_factory=list)
    failures: int = 0

    async def commit(self, deliveries: Sequence[ordered.Delivery]) -> None:
        batch = [int(envelope.message_id) for _, envelopes in deliveries for envelope in envelopes]
        if self.transient_failures > 0:
            self.transient_failures -= 1
            self._failed()
            raise asyncpg.exceptions.SerializationError("could not serialize access")
        if self.poison & set(batch):
            self._failed()
            raise ValueError("a command the store refuses")
        self.committed.extend(batch)

    def _failed(self) -> None:
        self.failures += 1
        if self.close_after_failures is not None and self.failures >= self.close_after_failures:
            self.channel.is_closed = True

    def delivery(self, n: int) -> ordered.Delivery:
        return cast(AbstractIncomingMessage, _Message(str(n), self.channel)), [envelope(n)]

    def bundle(self, count: int) -> tuple[_Message, ordered.Delivery]:
        """One message carrying envelopes 0 .. count - 1."""
        message = _Message("bundle", self.channel)
        envelopes = [envelope(n) for n in range(count)]
        return message, (cast(AbstractIncomingMessage, message), envelopes)

    async def aside(self, delivery: ordered.Delivery) -> None:
        self.set_aside.extend(int(e.message_id) for e in delivery[1])


def envelope(n: int) -> Envelope:
    return Envelope(str(n), "t", "test", "s", n + 1, {})


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordered, "backoff", lambda attempt: 0.0)


async def run(store: Store, deliveries: list[int]) -> bool:
    return await ordered.commit_in_order(
        [store.delivery(n) for n in deliveries], store.commit, set_aside=store.aside, name="t"
    )


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=30),
    data=st.data(),
    transient=st.integers(min_value=0, max_value=12),
)
async def test_commits_keep_their_order_and_only_poison_is_set_aside(
    count: int, data: Any, transient: int
) -> None:
    deliveries = list(range(count))
    poison = set(data.draw(st.sets(st.sampled_from(deliveries), max_size=count)))
    store = Store(poison=poison, transient_failures=transient)
    assert await run(store, deliveries)
    assert store.committed == [d for d in deliveries if d not in poison]
    assert store.set_aside == sorted(poison)


async def test_a_transient_fault_is_waited_out_whatever_its_length() -> None:
    store = Store(poison=set(), transient_failures=50)
    assert await run(store, [1, 2, 3])
    assert store.committed == [1, 2, 3]
    assert store.set_aside == []


async def test_a_closed_channel_stops_everything_after_the_failure() -> None:
    store = Store(poison={2}, transient_failures=0, close_after_failures=2)
    assert not await run(store, [1, 2, 3, 4])
    # 1 committed alone; 2 failed twice and its channel closed: neither 2 nor what follows
    # it may be applied here (the broker redelivers them in order).
    assert store.committed == [1]
    assert store.set_aside == []


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=20),
    data=st.data(),
    transient=st.integers(min_value=0, max_value=12),
)
async def test_a_salvaged_bundle_applies_all_but_its_poison_in_order(
    count: int, data: Any, transient: int
) -> None:
    poison = set(data.draw(st.sets(st.integers(min_value=0, max_value=count - 1))))
    store = Store(poison=poison, transient_failures=transient)
    message, delivery = store.bundle(count)
    # settled (acknowledged) only when nothing is left for the dead-letter queue
    assert await ordered.salvage_bundle(delivery, store.commit, name="t") is (not poison)
    assert message.acked is (not poison)
    assert store.committed == [n for n in range(count) if n not in poison]


async def test_a_salvage_stops_when_the_bundles_channel_closes() -> None:
    store = Store(poison={1}, transient_failures=0, close_after_failures=2)
    message, delivery = store.bundle(4)
    # nothing to dead-letter here (the broker redelivers the bundle), nothing acknowledged
    assert await ordered.salvage_bundle(delivery, store.commit, name="t")
    assert not message.acked
    assert store.committed == [0]


async def test_a_single_message_is_not_salvaged() -> None:
    store = Store(poison=set(), transient_failures=0)
    message, delivery = store.bundle(1)
    assert not await ordered.salvage_bundle(delivery, store.commit, name="t")
    assert store.committed == []
    assert not message.acked
