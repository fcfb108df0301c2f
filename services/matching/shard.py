"""One matching shard in a service process: durable, ordered, exactly once.

Commands arrive on the shard's single-active-consumer queue. A batch of them is applied
to the in-memory books and written, in one transaction, to the journal (input) and the
outbox (output) before any is acknowledged. The journal's primary key (shard, seq) fences
out a second writer, and its unique message id makes a redelivered command a no-op.

Before each batch the worker compares the journal's head with its own: behind means
another instance wrote (this one was a standby that just took over), so it replays the
journal; ahead means its last batch failed to commit, so it rebuilds from a snapshot.
Every replay checks that it reproduces, byte for byte, the events already in the outbox.
"""

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter

from services.matching import store
from services.matching.domain import IMPLEMENTATION as BOOK_BUILD
from services.matching.engine import BookOutput, ShardEngine
from shared.clock import rfc3339, utc_now
from shared.contracts import BOOK_EVENTS, book_routing_key, book_stream
from shared.driver import Tx
from shared.faults import crash_point
from shared.messaging.batching import DeliveryBatcher
from shared.messaging.envelope import Envelope, EnvelopeError
from shared.messaging.ordered import Delivery, commit_in_order, salvage_bundle
from shared.messaging.outbox import Draft
from shared.messaging.topology import QueueSpec
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

COMMANDS_APPLIED = Counter(
    "exchange_matching_commands_total", "Book commands applied and committed", ["shard"]
)
COMMIT_FAILURES = Counter(
    "exchange_matching_commit_failures_total",
    "Attempts to commit a batch of book commands that failed (each is retried or set aside)",
    ["shard"],
)


async def _dead_letter(delivery: Delivery) -> None:
    message, envelopes = delivery
    log.error(
        "book command dead-lettered: it failed every time",
        extra={"message_ids": [e.message_id for e in envelopes]},
    )
    await message.reject(requeue=False)


class ReplayDiverged(RuntimeError):
    """Replaying the journal gave other events than those already published."""


def output_payload(output: BookOutput) -> dict[str, Any]:
    return {
        "instrument": output.instrument,
        "executed_at": output.executed_at,
        "events": output.events,
    }


class ShardWorker:
    def __init__(
        self, shard: int, queue: QueueSpec, *, snapshot_every: int = 5000, max_batch: int = 500
    ) -> None:
        self.shard = shard
        self.queue = queue
        self.engine = ShardEngine(shard)
        self._snapshot_every = snapshot_every
        self._lock = asyncio.Lock()
        self._batcher = DeliveryBatcher(self._process, max_batch=max_batch, name=f"shard-{shard}")
        self._runtime: ServiceRuntime | None = None
        self._stale = False
        self._applied_since_snapshot = 0
        self._saving: asyncio.Task[None] | None = None
        self.last_active = 0.0

    @property
    def runtime(self) -> ServiceRuntime:
        assert self._runtime is not None, "worker not started"
        return self._runtime

    async def start(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime
        started = time.perf_counter()
        async with self._lock:
            await self._rebuild()
            # The recovered books (up to 100k+ resting orders, the day's id index) live
            # as long as the process: take them out of the collector's sight so that no
            # full collection on the command path traverses them again (new objects are
            # collected as usual; measured in docs/benchmarks.md, "Matching book").
            gc.collect()
            gc.freeze()
        log.info(
            "shard recovered",
            extra={
                "shard": self.shard,
                "head": self.engine.head,
                "books": len(self.engine.books),
                "resting_orders": sum(len(b) for b in self.engine.books.values()),
                "seconds": round(time.perf_counter() - started, 3),
                "book_build": BOOK_BUILD,
            },
        )
        self._batcher.start()
        await runtime.broker.consume(self.queue, self._batcher.receive)

    async def stop(self) -> None:
        await self._batcher.stop()
        await self._saved()
        async with self._lock:
            if self._applied_since_snapshot and not self._stale:
                self._snapshot_in_background()
        await self._saved()

    # ------------------------------------------------------------------ recovery

    async def _rebuild(self) -> None:
        """Load the newest snapshot and replay the journal after it."""
        async with self.runtime.session_factory() as session:
            head = await store.journal_head(session, self.shard)
            engine = await store.load_snapshot(session, self.shard, head)
            await self._replay(session, engine, head)
        self.engine = engine
        self._stale = False

    async def _replay(self, session: Tx, engine: ShardEngine, upto: int) -> None:
        produced: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        count = 0
        async for entry in store.read_journal(session, self.shard, engine.head, upto):
            for output in engine.apply(entry.seq, entry.command, entry.executed_at):
                produced.setdefault(output.instrument, []).append(
                    (engine.published[output.instrument], output_payload(output))
                )
            count += 1
            if count % 5000 == 0:
                await self._verify(session, produced)
                produced = {}
        await self._verify(session, produced)
        if engine.head != upto:
            raise ReplayDiverged(
                f"shard {self.shard}: replay stopped at {engine.head}, journal at {upto}"
            )

    async def _verify(
        self, session: Tx, produced: dict[str, list[tuple[int, dict[str, Any]]]]
    ) -> None:
        for code, items in produced.items():
            stored = await store.published_payloads(session, code, items[0][0] - 1, items[-1][0])
            if stored != items:
                raise ReplayDiverged(
                    f"shard {self.shard}: replaying {code} gave other events than were published"
                )

    async def catch_up(self) -> None:
        """Bring a standby's books up to the journal, for reads; writes nothing."""
        async with self._lock, self.runtime.session_factory() as session:
            await self._sync(session, await store.journal_head(session, self.shard))

    async def _sync(self, session: Tx, head: int) -> None:
        """Bring the books to the journal's ``head`` (read in the caller's transaction)."""
        if self._stale or head < self.engine.head:
            engine = await store.load_snapshot(session, self.shard, head)
            await self._replay(session, engine, head)
            self.engine = engine
            self._stale = False
        elif head > self.engine.head:
            await self._replay(session, self.engine, head)

    # ------------------------------------------------------------------ commands

    async def _process(self, batch: Sequence[AbstractIncomingMessage]) -> None:
        items: list[Delivery] = []
        for message in batch:
            try:
                items.append((message, Envelope.decode_message(message)))
            except EnvelopeError as exc:
                log.error("undecodable book command dead-lettered", extra={"error": str(exc)})
                await message.reject(requeue=False)
        if not items:
            return
        async with self._lock:
            # A failed batch is never returned to the queue: a later command would
            # overtake it (a cancel its order). See shared.messaging.ordered.
            await commit_in_order(
                items,
                self._commit,
                set_aside=self._set_aside,
                name=f"shard-{self.shard}",
                on_failure=self._failed,
            )
            if self._applied_since_snapshot >= self._snapshot_every:
                self._snapshot_in_background()

    async def _commit(self, items: Sequence[Delivery]) -> None:
        await self._apply_deliveries(items)
        crash_point("matching_after_commit")
        for message, _ in items:
            await message.ack()
        self.last_active = time.monotonic()

    async def _set_aside(self, delivery: Delivery) -> None:
        """Dead-letter a delivery that keeps failing. Of a bundle, the commands that can be
        journaled are first, one at a time and in order (the journal drops them if the
        bundle is replayed), so that they do not wait for a replay that would put them
        behind the commands sent after them."""
        if not await salvage_bundle(
            delivery, self._apply_deliveries, name=f"shard-{self.shard}", on_failure=self._failed
        ):
            await _dead_letter(delivery)

    async def _apply_deliveries(self, items: Sequence[Delivery]) -> None:
        await self._apply([envelope for _, envelopes in items for envelope in envelopes])

    def _failed(self) -> None:
        self._stale = True  # memory may be ahead of what committed
        COMMIT_FAILURES.labels(str(self.shard)).inc()

    async def _apply(self, envelopes: Sequence[Envelope]) -> None:
        runtime = self.runtime
        async with runtime.driver.transaction() as session:
            head, known = await store.head_and_known(
                session, self.shard, [e.message_id for e in envelopes]
            )
            await self._sync(session, head)
            entries: list[store.JournalEntry] = []
            drafts: dict[str, list[Draft]] = {}
            engine = self.engine
            for envelope in envelopes:
                if envelope.message_id in known:
                    continue
                known.add(envelope.message_id)
                seq = engine.head + 1
                executed_at = rfc3339(utc_now())
                outputs = engine.apply(seq, envelope.payload, executed_at)
                if not outputs and envelope.payload.get("command") not in ("list", "roll"):
                    log.error(
                        "book command had no effect",
                        extra={"shard": self.shard, "command": envelope.payload},
                    )
                entries.append(
                    store.JournalEntry(seq, envelope.message_id, executed_at, envelope.payload)
                )
                for output in outputs:
                    drafts.setdefault(output.instrument, []).append(
                        Draft(
                            BOOK_EVENTS, book_routing_key(output.instrument), output_payload(output)
                        )
                    )
            if entries:
                await store.append(session, self.shard, entries)
            written_by_stream = await runtime.outbox.add_streams(
                session, {book_stream(code): book_drafts for code, book_drafts in drafts.items()}
            )
            for code in drafts:
                written = written_by_stream[book_stream(code)]
                if written[-1].sequence != engine.published[code]:
                    raise ReplayDiverged(
                        f"outbox stream of {code} is at {written[-1].sequence}, "
                        f"the book has published {engine.published[code]}"
                    )
            crash_point("matching_before_commit")
        self._applied_since_snapshot += len(entries)
        COMMANDS_APPLIED.labels(str(self.shard)).inc(len(entries))

    def _snapshot_in_background(self) -> None:
        """Take the books' state now, in the cycle (what is committed), and save it while
        the shard goes on: the insert of a large snapshot (about 1 MB for 10,000 resting
        orders) held up the shard's next commands. One save at a time; a failed one is
        only logged, the next comes after as many commands again."""
        if self._saving is not None and not self._saving.done():
            return
        row = store.snapshot_row(self.engine)
        self._applied_since_snapshot = 0
        self._saving = asyncio.create_task(self._save(row), name=f"snapshot-{self.shard}")

    async def _saved(self) -> None:
        """Wait for the snapshot being saved, if any (a failed save was logged)."""
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)

    async def _save(self, row: store.SnapshotRow) -> None:
        try:
            async with self.runtime.session_factory() as session, session.begin():
                await store.save_snapshot(session, row)
        except Exception as exc:
            # Not the traceback: the database error would quote the whole snapshot.
            log.warning(
                "shard snapshot not saved",
                extra={"shard": self.shard, "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
