"""Property and differential tests: the book against a naive reference model.

Random command streams (submits of every time in force, cancels, amends, halts) from a
few members, so self-trade prevention is exercised often. Expected results come from
``reference_model.RefBook``, which shares no code with the book.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_model import RefBook
from typed_book import TypedBook

from services.matching.domain import (
    AmendRejected,
    CancelRejected,
    OrderAccepted,
    OrderAmended,
    OrderBook,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRested,
    Trade,
    TypedEvent,
)

TICK, LOT, MIN_QTY, LOW, HIGH = 5, 10, 20, 950, 1050
DATE = datetime.date(2026, 5, 4)

Command = tuple[Any, ...]

prices = st.one_of(
    st.integers(min_value=196, max_value=204).map(lambda i: i * TICK),  # 980..1020
    st.sampled_from([LOW, HIGH, LOW - TICK, HIGH + TICK, 1002]),
)
quantities = st.one_of(
    st.integers(min_value=2, max_value=8).map(lambda i: i * LOT),
    st.sampled_from([10, 15, 0]),
)
submits = st.tuples(
    st.just("submit"),
    st.sampled_from(["m1", "m2", "m3"]),
    st.sampled_from(["BUY", "SELL"]),
    prices,
    quantities,
    st.sampled_from(["GTC", "GTC", "DAY", "IOC", "FOK"]),
)
cancels = st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=10_000))
amends = st.tuples(
    st.just("amend"),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=8).map(lambda i: i * LOT),
)
halts = st.sampled_from([("halt",), ("resume",)])
commands = st.lists(
    st.one_of(submits, submits, submits, cancels, amends, halts), min_size=1, max_size=60
)


def new_book() -> TypedBook:
    return TypedBook(OrderBook("P1", TICK, LOT, MIN_QTY, LOW, HIGH, DATE))


def resolve(cmd: Command, ids: list[str]) -> Command:
    """Turn index-based cancel/amend targets into order ids (or an unknown id)."""
    if cmd[0] in ("cancel", "amend"):
        target = ids[cmd[1] % len(ids)] if ids and cmd[1] % 7 else "unknown"
        return (cmd[0], target, *cmd[2:])
    return cmd


def run_book(book: TypedBook, cmd: Command, order_id: str) -> list[TypedEvent]:
    kind = cmd[0]
    if kind == "submit":
        _, member, side, price, qty, tif = cmd
        return book.submit(order_id, member, side, price, qty, tif)
    if kind == "cancel":
        return book.cancel(cmd[1])
    if kind == "amend":
        return book.amend(cmd[1], cmd[2])
    if kind == "halt":
        return book.halt()
    return book.resume()


def run_ref(ref: RefBook, cmd: Command, order_id: str) -> str:
    kind = cmd[0]
    if kind == "submit":
        _, member, side, price, qty, tif = cmd
        return ref.submit(order_id, member, side, price, qty, tif)
    if kind == "cancel":
        return ref.cancel(cmd[1])
    if kind == "amend":
        return ref.amend(cmd[1], cmd[2])
    ref.trading = kind == "resume"
    return str(kind)


def outcome(cmd: Command, events: list[TypedEvent]) -> str:
    first, final = events[0], events[-1]
    if isinstance(first, OrderRejected | CancelRejected | AmendRejected):
        return f"rejected:{first.reason}"
    if cmd[0] in ("halt", "resume"):
        return str(cmd[0])
    if isinstance(final, OrderCancelled):
        return f"cancelled:{final.reason}"
    if isinstance(final, OrderRested):
        return "rested"
    if isinstance(final, OrderAmended):
        return "amended"
    return "filled"


def trade_tuples(events: list[TypedEvent]) -> list[tuple[str, str, str, str, int, int]]:
    return [
        (
            e.maker_order_id,
            e.taker_order_id,
            e.maker_member_id,
            e.taker_member_id,
            e.price_fen,
            e.quantity,
        )
        for e in events
        if isinstance(e, Trade)
    ]


def check_invariants(book: TypedBook) -> None:
    bids, asks = book.depth(1000)
    # No crossed book at rest.
    if bids and asks:
        assert bids[0][0] < asks[0][0]
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    # Depth equals the sum of open orders, and levels are never empty.
    totals: dict[tuple[str, int], int] = defaultdict(int)
    for view in book.open_orders():
        assert view.remaining_quantity > 0
        assert view.filled_quantity + view.remaining_quantity == view.quantity
        totals[(view.side, view.price_fen)] += view.remaining_quantity
    assert dict(totals) == {("BUY", p): q for p, q in bids} | {("SELL", p): q for p, q in asks}
    # FIFO at a price: priorities increase along each level.
    last: dict[tuple[str, int], int] = {}
    for view in book.open_orders():
        key = (view.side, view.price_fen)
        assert last.get(key, -1) < view.priority
        last[key] = view.priority


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_differential_against_reference_model(stream: list[Command]) -> None:
    book, ref = new_book(), RefBook(TICK, LOT, MIN_QTY, LOW, HIGH)
    ids: list[str] = []
    all_events: list[TypedEvent] = []
    book_trades: list[tuple[str, str, str, str, int, int]] = []
    accepted: dict[str, tuple[int, str, int]] = {}  # id -> (quantity, side, limit)
    filled: dict[str, int] = defaultdict(int)
    for n, raw in enumerate(stream):
        cmd = resolve(raw, ids)
        order_id = f"o{n}"
        events = run_book(book, cmd, order_id)
        expected = run_ref(ref, cmd, order_id)
        assert outcome(cmd, events) == expected, (cmd, events)
        if cmd[0] == "submit":
            ids.append(order_id)
            if cmd[5] == "IOC" or cmd[5] == "FOK":
                assert order_id not in book  # IOC and FOK never rest
        for e in events:
            if isinstance(e, OrderAccepted):
                accepted[e.order_id] = (e.quantity, e.side, e.price_fen)
            elif isinstance(e, Trade):
                # Trade at the maker's price, within the taker's limit.
                _, maker_side, maker_price = accepted[e.maker_order_id]
                _, taker_side, taker_limit = accepted[e.taker_order_id]
                assert e.price_fen == maker_price
                assert maker_side != taker_side == e.taker_side
                assert (
                    (taker_limit >= e.price_fen)
                    if taker_side == "BUY"
                    else (taker_limit <= e.price_fen)
                )
                assert e.maker_member_id != e.taker_member_id
                filled[e.maker_order_id] += e.quantity
                filled[e.taker_order_id] += e.quantity
            elif isinstance(e, OrderFilled):
                assert e.filled_quantity == filled[e.order_id]
        fok = [e for e in events if isinstance(e, OrderAccepted) and e.tif == "FOK"]
        if fok:
            got = sum(e.quantity for e in events if isinstance(e, Trade))
            assert got in (0, fok[0].quantity)  # all or nothing
        book_trades += trade_tuples(events)
        all_events += events
        check_invariants(book)
    assert [e.seq for e in all_events] == list(range(1, len(all_events) + 1))
    assert book_trades == [
        (
            t.maker_order_id,
            t.taker_order_id,
            t.maker_member_id,
            t.taker_member_id,
            t.price_fen,
            t.quantity,
        )
        for t in ref.trades
    ]
    assert [
        (v.order_id, v.side, v.price_fen, v.remaining_quantity) for v in book.open_orders()
    ] == ref.open_orders()
    # Conservation: filled + remaining == quantity for every open order.
    for view in book.open_orders():
        assert filled[view.order_id] == view.filled_quantity


@settings(max_examples=200, deadline=None)
@given(commands, commands, st.booleans())
def test_snapshot_restore_gives_same_hash_and_same_future(
    before: list[Command], after: list[Command], roll: bool
) -> None:
    book = new_book()
    ids: list[str] = []
    for n, raw in enumerate(before):
        book_cmd = resolve(raw, ids)
        run_book(book, book_cmd, f"a{n}")
        if raw[0] == "submit":
            ids.append(f"a{n}")
    copy = TypedBook.restore(json.loads(json.dumps(book.snapshot())))
    assert copy.state_hash() == book.state_hash()
    assert copy.snapshot() == book.snapshot()
    if roll:
        assert copy.roll_day(DATE + datetime.timedelta(days=1)) == book.roll_day(
            DATE + datetime.timedelta(days=1)
        )
    for n, raw in enumerate(after):
        cmd = resolve(raw, ids)
        assert run_book(copy, cmd, f"b{n}") == run_book(book, cmd, f"b{n}")
        if raw[0] == "submit":
            ids.append(f"b{n}")
    assert copy.state_hash() == book.state_hash()


def canonical_hash(book: TypedBook) -> str:
    """The state hash's definition, spelled out with the standard library."""
    text = json.dumps(book.snapshot(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@given(commands, st.sampled_from(["m1", "会员", "m\u00e9", 'm"q']))
def test_state_hash_is_the_canonical_json_digest(stream: list[Command], member: str) -> None:
    """Whatever the book holds (here also member ids that are not plain ASCII, which the
    canonical form escapes), the hash is that of the canonical JSON of its snapshot."""
    book = new_book()
    ids: list[str] = []
    for n, raw in enumerate(stream):
        cmd = resolve(raw, ids)
        if cmd[0] == "submit" and cmd[1] == "m3":
            cmd = (cmd[0], member, *cmd[2:])
        run_book(book, cmd, f"o{n}")
        if raw[0] == "submit":
            ids.append(f"o{n}")
        assert book.state_hash() == canonical_hash(book)


@settings(max_examples=200, deadline=None)
@given(commands)
def test_same_inputs_same_events_and_hash(stream: list[Command]) -> None:
    results = []
    for _ in range(2):
        book = new_book()
        ids: list[str] = []
        out: list[TypedEvent] = []
        for n, raw in enumerate(stream):
            out += run_book(book, resolve(raw, ids), f"o{n}")
            if raw[0] == "submit":
                ids.append(f"o{n}")
        results.append((out, book.state_hash()))
    assert results[0] == results[1]


@settings(max_examples=200, deadline=None)
@given(commands)
def test_day_roll_and_delist_end_states(stream: list[Command]) -> None:
    book = new_book()
    ids: list[str] = []
    for n, raw in enumerate(stream):
        run_book(book, resolve(raw, ids), f"o{n}")
        if raw[0] == "submit":
            ids.append(f"o{n}")
    open_before = book.open_orders()
    rolled = book.roll_day(DATE + datetime.timedelta(days=1))
    assert all(isinstance(e, OrderExpired) for e in rolled[1:])
    expired = [e.order_id for e in rolled[1:] if isinstance(e, OrderExpired)]
    assert expired == [
        v.order_id for v in sorted(open_before, key=lambda v: v.priority) if v.tif == "DAY"
    ]
    assert all(v.tif != "DAY" for v in book.open_orders())
    # Trades after the roll carry the new business date.
    day2 = DATE + datetime.timedelta(days=1)
    later: list[TypedEvent] = []
    for n, raw in enumerate(stream):
        later += run_book(book, resolve(raw, ids), f"d2-{n}")
    assert all(e.business_date == day2 for e in later if isinstance(e, Trade))
    if book.state == "halted":
        book.resume()
    remaining = sorted(book.open_orders(), key=lambda v: v.priority)
    delisted = book.delist()
    assert [(e.order_id, e.reason) for e in delisted[1:]] == [  # type: ignore[union-attr]
        (v.order_id, "DELISTED") for v in remaining
    ]
    assert book.open_orders() == []
    assert book.depth(10) == ([], [])
    seqs = [e.seq for e in rolled + later]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert delisted[0].seq == book.sequence - len(delisted) + 1
