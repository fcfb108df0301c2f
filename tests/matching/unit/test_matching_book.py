"""Example-based tests of the matching book. Expected values are written by hand."""

from __future__ import annotations

import datetime
import gc
import json

import pytest
from typed_book import TypedBook

from services.matching.domain import (
    AmendRejected,
    BookConfigError,
    BookStateChanged,
    CancelRejected,
    CommandRejected,
    DayRolled,
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
    typed,
)

DAY1 = datetime.date(2026, 3, 2)
DAY2 = datetime.date(2026, 3, 3)


def make_book(**overrides: object) -> TypedBook:
    params: dict[str, object] = {
        "instrument": "GOLD1",
        "tick_size_fen": 5,
        "lot_size": 10,
        "min_quantity": 20,
        "band_low_fen": 900,
        "band_high_fen": 1100,
        "business_date": DAY1,
    }
    params.update(overrides)
    return TypedBook(OrderBook(**params))  # type: ignore[arg-type]


def trades(events: list[TypedEvent]) -> list[tuple[str, str, int, int]]:
    return [
        (e.maker_order_id, e.taker_order_id, e.price_fen, e.quantity)
        for e in events
        if isinstance(e, Trade)
    ]


def last(events: list[TypedEvent]) -> TypedEvent:
    return events[-1]


# ---------------------------------------------------------------- construction


def test_constructor_refuses_bad_config() -> None:
    with pytest.raises(BookConfigError):
        make_book(tick_size_fen=0)
    with pytest.raises(BookConfigError):
        make_book(band_low_fen=1200)
    with pytest.raises(BookConfigError):
        make_book(band_low_fen=903)
    with pytest.raises(BookConfigError):
        make_book(state="open")


def test_initial_sequence_is_continued() -> None:
    book = make_book(sequence=41)
    events = book.submit("o1", "m1", "BUY", 1000, 20, "GTC")
    assert [e.seq for e in events] == [42, 43]
    assert book.sequence == 43


# ---------------------------------------------------------------- last-line checks


@pytest.mark.parametrize(
    ("price", "qty", "reason"),
    [
        (1002, 20, "PRICE_OFF_TICK"),
        (895, 20, "PRICE_OUT_OF_BAND"),
        (1105, 20, "PRICE_OUT_OF_BAND"),
        (1000, 25, "QUANTITY_OFF_LOT"),
        (1000, 0, "QUANTITY_OFF_LOT"),
        (1000, -10, "QUANTITY_OFF_LOT"),
        (1000, 10, "BELOW_MIN_QUANTITY"),
    ],
)
def test_submit_rejections(price: int, qty: int, reason: str) -> None:
    book = make_book()
    events = book.submit("o1", "m1", "BUY", price, qty, "GTC")
    assert events == [OrderRejected(1, "o1", "m1", reason)]
    assert len(book) == 0
    assert book.get_order("o1") is None


def test_band_is_inclusive() -> None:
    book = make_book()
    assert isinstance(last(book.submit("lo", "m1", "BUY", 900, 20, "GTC")), OrderRested)
    assert isinstance(last(book.submit("hi", "m1", "SELL", 1100, 20, "GTC")), OrderRested)


def test_duplicate_order_id_open_and_final() -> None:
    book = make_book()
    book.submit("o1", "m1", "BUY", 1000, 20, "GTC")
    assert last(book.submit("o1", "m2", "SELL", 1050, 20, "GTC")) == OrderRejected(
        3, "o1", "m2", "DUPLICATE_ORDER_ID"
    )
    book.cancel("o1")
    assert isinstance(last(book.submit("o1", "m1", "BUY", 1000, 20, "GTC")), OrderRejected)
    # A rejected id was never an order: it may be used again.
    book.submit("bad", "m1", "BUY", 1001, 20, "GTC")
    assert isinstance(last(book.submit("bad", "m1", "BUY", 1000, 20, "GTC")), OrderRested)


# ---------------------------------------------------------------- matching


def test_price_time_priority_and_maker_price() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1010, 20, "GTC")
    book.submit("s2", "m2", "SELL", 1000, 20, "GTC")
    book.submit("s3", "m3", "SELL", 1000, 20, "GTC")
    events = book.submit("b1", "m4", "BUY", 1050, 50, "GTC")
    assert trades(events) == [
        ("s2", "b1", 1000, 20),
        ("s3", "b1", 1000, 20),
        ("s1", "b1", 1010, 10),
    ]
    assert book.depth(5) == ([], [(1010, 10)])
    assert book.get_order("s1") is not None
    assert book.get_order("s1").remaining_quantity == 10  # type: ignore[union-attr]
    assert book.final_status("b1") == "FILLED"
    assert book.final_status("s2") == "FILLED"


def test_full_event_stream_of_a_partial_fill_that_rests() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 30, "GTC")
    events = book.submit("b1", "m2", "BUY", 1005, 50, "DAY")
    assert events == [
        OrderAccepted(3, "b1", "m2", "BUY", 1005, 50, "DAY"),
        Trade(4, "GOLD1-4", "s1", "b1", "m1", "m2", "BUY", 1000, 30, DAY1),
        OrderFilled(5, "s1", 30, 0, "FILLED"),
        OrderFilled(6, "b1", 30, 20, "PARTIALLY_FILLED"),
        OrderRested(7, "b1", "BUY", 1005, 20),
    ]
    assert book.depth(5) == ([(1005, 20)], [])
    view = book.get_order("b1")
    assert view is not None
    assert (view.filled_quantity, view.remaining_quantity, view.status) == (
        30,
        20,
        "PARTIALLY_FILLED",
    )


def test_sell_taker_walks_bids_best_first() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 990, 20, "GTC")
    book.submit("b2", "m1", "BUY", 1000, 20, "GTC")
    events = book.submit("s1", "m2", "SELL", 980, 30, "IOC")
    assert trades(events) == [("b2", "s1", 1000, 20), ("b1", "s1", 990, 10)]
    assert last(events) == OrderFilled(events[-1].seq, "s1", 30, 0, "FILLED")


def test_no_cross_when_prices_do_not_meet() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 995, 20, "GTC")
    events = book.submit("s1", "m2", "SELL", 1000, 20, "GTC")
    assert trades(events) == []
    assert book.depth(5) == ([(995, 20)], [(1000, 20)])
    assert (book.best_bid(), book.best_ask()) == (995, 1000)


def test_ioc_cancels_remainder_and_never_rests() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    events = book.submit("b1", "m2", "BUY", 1000, 50, "IOC")
    assert trades(events) == [("s1", "b1", 1000, 20)]
    assert last(events) == OrderCancelled(events[-1].seq, "b1", "IOC_REMAINDER", 20, 30)
    assert book.depth(5) == ([], [])
    events = book.submit("b2", "m2", "BUY", 1000, 50, "IOC")
    assert [type(e) for e in events] == [OrderAccepted, OrderCancelled]
    assert book.final_status("b2") == "CANCELLED"


def test_fok_all_or_nothing() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    book.submit("s2", "m2", "SELL", 1010, 20, "GTC")
    events = book.submit("f1", "m3", "BUY", 1005, 30, "FOK")
    assert trades(events) == []
    assert last(events) == OrderCancelled(events[-1].seq, "f1", "FOK_UNFILLED", 0, 30)
    assert book.depth(5) == ([], [(1000, 20), (1010, 20)])
    events = book.submit("f2", "m3", "BUY", 1010, 40, "FOK")
    assert trades(events) == [("s1", "f2", 1000, 20), ("s2", "f2", 1010, 20)]
    assert book.depth(5) == ([], [])


def test_fok_counts_only_liquidity_before_own_order() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    book.submit("own", "m3", "SELL", 1000, 20, "GTC")
    book.submit("s3", "m2", "SELL", 1000, 50, "GTC")
    # 70 units from others are there, but only 20 before the own order.
    events = book.submit("f1", "m3", "BUY", 1000, 30, "FOK")
    assert trades(events) == []
    assert last(events).reason == "FOK_UNFILLED"  # type: ignore[union-attr]
    events = book.submit("f2", "m3", "BUY", 1000, 20, "FOK")
    assert trades(events) == [("s1", "f2", 1000, 20)]


# ---------------------------------------------------------------- self-trade prevention


def test_stp_stops_at_own_order_keeps_prior_fills_and_own_resting_order() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    book.submit("own", "m2", "SELL", 1000, 20, "GTC")
    book.submit("s3", "m3", "SELL", 995, 20, "GTC")
    events = book.submit("b1", "m2", "BUY", 1010, 100, "GTC")
    assert trades(events) == [("s3", "b1", 995, 20), ("s1", "b1", 1000, 20)]
    assert last(events) == OrderCancelled(events[-1].seq, "b1", "SELF_TRADE_PREVENTED", 40, 60)
    assert book.get_order("own") is not None
    assert book.get_order("b1") is None
    assert book.depth(5) == ([], [(1000, 20)])


def test_stp_when_own_order_is_first() -> None:
    book = make_book()
    book.submit("own", "m1", "BUY", 1000, 20, "GTC")
    book.submit("b2", "m2", "BUY", 1000, 20, "GTC")
    events = book.submit("s1", "m1", "SELL", 1000, 20, "IOC")
    assert trades(events) == []
    assert last(events).reason == "SELF_TRADE_PREVENTED"  # type: ignore[union-attr]
    assert book.depth(5) == ([(1000, 40)], [])


def test_own_order_beyond_the_limit_does_not_stop() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    book.submit("own", "m2", "SELL", 1010, 20, "GTC")
    events = book.submit("b1", "m2", "BUY", 1000, 40, "GTC")
    assert trades(events) == [("s1", "b1", 1000, 20)]
    assert isinstance(last(events), OrderRested)


# ---------------------------------------------------------------- cancel and amend


def test_cancel_open_unknown_and_final() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    book.submit("s1", "m2", "SELL", 1000, 10 * 2, "IOC")
    assert book.cancel("b1") == [OrderCancelled(7, "b1", "USER", 20, 20)]
    assert book.cancel("b1") == [CancelRejected(8, "b1", "ORDER_FINAL")]
    assert book.cancel("zz") == [CancelRejected(9, "zz", "ORDER_NOT_FOUND")]
    assert book.depth(5) == ([], [])


def test_amend_keeps_priority_and_releases() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 60, "GTC")
    book.submit("b2", "m2", "BUY", 1000, 20, "GTC")
    assert book.amend("b1", 30) == [OrderAmended(5, "b1", 30, 0, 30, 30)]
    assert book.depth(1) == ([(1000, 50)], [])
    events = book.submit("s1", "m3", "SELL", 1000, 30, "IOC")
    assert trades(events) == [("b1", "s1", 1000, 30)]


@pytest.mark.parametrize("new_qty", [60, 70, 20, 10, 35])
def test_invalid_amends(new_qty: int) -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 60, "GTC")
    book.submit("s1", "m2", "SELL", 1000, 20, "IOC")  # b1 filled 20
    before = book.state_hash()
    events = book.amend("b1", new_qty)
    assert events == [AmendRejected(events[0].seq, "b1", "INVALID_AMEND")]
    view = book.get_order("b1")
    assert view is not None
    assert (view.quantity, view.remaining_quantity) == (60, 40)
    assert book.snapshot()["orders"] == json.loads(json.dumps(book.snapshot()["orders"]))
    assert before != book.state_hash()  # only the sequence moved
    assert book.snapshot()["orders"][0][4:6] == [60, 40]


def test_amend_above_filled_after_partial_fill() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 60, "GTC")
    book.submit("s1", "m2", "SELL", 1000, 20, "IOC")
    assert book.amend("b1", 30)[0] == OrderAmended(7, "b1", 30, 20, 10, 30)
    assert book.depth(1) == ([(1000, 10)], [])


def test_amend_unknown_and_final() -> None:
    book = make_book()
    assert book.amend("x", 10)[0].reason == "ORDER_NOT_FOUND"  # type: ignore[union-attr]
    book.submit("b1", "m1", "BUY", 1000, 20, "GTC")
    book.cancel("b1")
    assert book.amend("b1", 10)[0].reason == "ORDER_FINAL"  # type: ignore[union-attr]


# ---------------------------------------------------------------- book states


def test_halt_accepts_only_cancels() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    book.submit("b2", "m1", "BUY", 995, 40, "GTC")
    assert book.halt() == [BookStateChanged(5, "trading", "halted")]
    assert book.submit("s1", "m2", "SELL", 1000, 20, "GTC")[0].reason == "INSTRUMENT_NOT_TRADING"  # type: ignore[union-attr]
    assert book.amend("b1", 20)[0].reason == "INSTRUMENT_NOT_TRADING"  # type: ignore[union-attr]
    assert book.cancel("b2")[0].reason == "USER"  # type: ignore[union-attr]
    assert book.halt()[0] == CommandRejected(9, "halt", "INVALID_STATE_TRANSITION")
    assert book.depth(5) == ([(1000, 40)], [])
    assert book.resume() == [BookStateChanged(10, "halted", "trading")]
    assert trades(book.submit("s1", "m2", "SELL", 1000, 20, "GTC")) == [("b1", "s1", 1000, 20)]


def test_delist_cancels_resting_orders_and_is_final() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    book.submit("s1", "m2", "SELL", 1050, 20, "DAY")
    book.submit("b2", "m3", "BUY", 1000, 20, "GTC")
    events = book.delist()
    assert events == [
        BookStateChanged(7, "trading", "delisted"),
        OrderCancelled(8, "b1", "DELISTED", 0, 40),
        OrderCancelled(9, "s1", "DELISTED", 0, 20),
        OrderCancelled(10, "b2", "DELISTED", 0, 20),
    ]
    assert len(book) == 0
    assert book.depth(5) == ([], [])
    assert book.resume()[0].reason == "INVALID_STATE_TRANSITION"  # type: ignore[union-attr]
    assert book.delist()[0].reason == "INVALID_STATE_TRANSITION"  # type: ignore[union-attr]
    assert book.submit("x", "m1", "BUY", 1000, 20, "GTC")[0].reason == "INSTRUMENT_NOT_TRADING"  # type: ignore[union-attr]
    assert book.cancel("b1")[0].reason == "ORDER_FINAL"  # type: ignore[union-attr]


def test_roll_day_expires_day_orders_and_dates_later_trades() -> None:
    book = make_book()
    book.submit("d1", "m1", "BUY", 1000, 20, "DAY")
    book.submit("g1", "m1", "BUY", 995, 20, "GTC")
    book.submit("d2", "m2", "SELL", 1050, 20, "DAY")
    assert book.roll_day(datetime.date(2026, 3, 4))[0].reason == "INVALID_BUSINESS_DATE"  # type: ignore[union-attr]
    events = book.roll_day(DAY2)
    assert events == [
        DayRolled(8, DAY1, DAY2),
        OrderExpired(9, "d1", 0, 20),
        OrderExpired(10, "d2", 0, 20),
    ]
    assert book.business_date == DAY2
    assert book.final_status("d1") == "EXPIRED"
    assert book.depth(5) == ([(995, 20)], [])
    trade = next(e for e in book.submit("s1", "m2", "SELL", 995, 20, "IOC") if isinstance(e, Trade))
    assert trade.business_date == DAY2
    assert trade.trade_id == f"GOLD1-{trade.seq}"


def test_set_band_applies_to_new_orders() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 20, "GTC")
    assert book.set_band(500, 600)[0] == (2 + 1, 500, 600)
    assert book.submit("b2", "m1", "BUY", 1000, 20, "GTC")[0].reason == "PRICE_OUT_OF_BAND"  # type: ignore[union-attr]
    assert book.get_order("b1") is not None
    assert book.set_band(600, 500)[0].reason == "INVALID_BAND"  # type: ignore[union-attr]
    assert book.band == (500, 600)


# ---------------------------------------------------------------- snapshot


def test_snapshot_is_json_and_restores_same_hash_and_behaviour() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    book.submit("b2", "m2", "BUY", 1000, 20, "DAY")
    book.submit("s1", "m3", "SELL", 1050, 30, "GTC")
    book.amend("b1", 30)
    book.cancel("s1")
    snap = json.loads(json.dumps(book.snapshot()))
    copy = TypedBook.restore(snap)
    assert copy.state_hash() == book.state_hash()
    assert copy.open_orders() == book.open_orders()
    assert copy.submit("s2", "m3", "SELL", 1000, 40, "IOC") == book.submit(
        "s2", "m3", "SELL", 1000, 40, "IOC"
    )
    assert copy.roll_day(DAY2) == book.roll_day(DAY2)
    assert copy.state_hash() == book.state_hash()


def test_state_hash_is_known_for_a_fixed_state() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    h1 = book.state_hash()
    assert len(h1) == 64
    assert h1 == make_book_with_b1().state_hash()
    book.cancel("b1")
    assert book.state_hash() != h1


def make_book_with_b1() -> OrderBook:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    return book


def test_restore_refuses_unknown_version() -> None:
    snap = make_book().snapshot()
    snap["version"] = 99
    with pytest.raises(BookConfigError):
        TypedBook.restore(snap)


def test_lazy_deletion_compacts_and_keeps_fifo() -> None:
    book = make_book()
    for i in range(100):
        book.submit(f"b{i}", "m1", "BUY", 1000, 20, "GTC")
    for i in range(0, 99):
        if i % 3:
            book.cancel(f"b{i}")
    survivors = [v.order_id for v in book.open_orders()]
    assert survivors == [f"b{i}" for i in range(100) if i % 3 == 0 or i == 99]
    assert book.depth(1) == ([(1000, 20 * len(survivors))], [])
    events = book.submit("s", "m2", "SELL", 1000, 20 * len(survivors), "IOC")
    assert [t[0] for t in trades(events)] == survivors
    assert book.depth(1) == ([], [])


def test_depth_limits_levels_and_aggregates() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 20, "GTC")
    book.submit("b2", "m2", "BUY", 1000, 30, "GTC")
    book.submit("b3", "m1", "BUY", 990, 20, "GTC")
    book.submit("b4", "m1", "BUY", 995, 20, "GTC")
    book.submit("s1", "m3", "SELL", 1010, 20, "GTC")
    book.submit("s2", "m3", "SELL", 1005, 40, "GTC")
    assert book.depth(2) == ([(1000, 50), (995, 20)], [(1005, 40), (1010, 20)])
    assert book.depth(0) == ([], [])
    assert [v.order_id for v in book.open_orders()] == ["b1", "b2", "b4", "b3", "s2", "s1"]


def test_restore_refuses_corrupt_order_rows() -> None:
    book = make_book()
    book.submit("b1", "m1", "BUY", 1000, 20, "GTC")
    snap = book.snapshot()
    snap["orders"][0][5] = 0  # remaining 0 is not an open order
    with pytest.raises(BookConfigError):
        TypedBook.restore(snap)


def test_events_are_typed_tuples() -> None:
    book = make_book()
    accepted = book.submit("b1", "m1", "BUY", 1000, 20, "GTC")[0]
    assert isinstance(accepted, OrderAccepted)
    assert isinstance(accepted, tuple)
    assert accepted._asdict()["order_id"] == "b1"


def test_non_int_prices_and_quantities_are_refused_not_rounded() -> None:
    book = make_book()
    bad_price: object = 1000.0
    bad_qty: object = True
    events = book.submit("f1", "m1", "BUY", bad_price, 20, "GTC")  # type: ignore[arg-type]
    assert events[0].reason == "PRICE_OFF_TICK"  # type: ignore[union-attr]
    events = book.submit("f2", "m1", "BUY", 1000, 20.0, "GTC")  # type: ignore[arg-type]
    assert events[0].reason == "QUANTITY_OFF_LOT"  # type: ignore[union-attr]
    events = book.submit("f3", "m1", "BUY", 1000, bad_qty, "GTC")  # type: ignore[arg-type]
    assert events[0].reason == "QUANTITY_OFF_LOT"  # type: ignore[union-attr]
    book.submit("b1", "m1", "BUY", 1000, 40, "GTC")
    assert book.amend("b1", 20.0)[0].reason == "INVALID_AMEND"  # type: ignore[arg-type, union-attr]
    assert len(book) == 1


def test_long_level_consumed_in_many_small_takes_keeps_fifo() -> None:
    # Many partial takes from one deep level advance its head past the trim threshold;
    # cancels in between leave dead entries behind and ahead of the head.
    book = make_book()
    for i in range(200):
        book.submit(f"b{i}", "m1", "BUY", 1000, 20, "GTC")
    for i in range(1, 200, 5):
        book.cancel(f"b{i}")
    expected = [f"b{i}" for i in range(200) if i % 5 != 1]
    taken: list[str] = []
    for j in range(len(expected) // 2):
        events = book.submit(f"s{j}", "m2", "SELL", 1000, 40, "IOC")
        taken += [t[0] for t in trades(events)]
        left = 20 * (len(expected) - len(taken))
        assert book.depth(1) == ([(1000, left)] if left else [], [])
        assert [v.order_id for v in book.open_orders()] == expected[len(taken) :]
        assert len(book) == len(expected) - len(taken)
    assert taken == expected[: len(taken)]
    snap = json.loads(json.dumps(book.snapshot()))
    assert TypedBook.restore(snap).state_hash() == book.state_hash()


def test_final_statuses_survive_snapshot_and_clear_at_roll() -> None:
    book = make_book()
    for i in range(600):
        book.submit(f"o{i}", "m1", "BUY", 1000, 20, "GTC")
        if i % 2:
            book.cancel(f"o{i}")
    book.submit("s", "m2", "SELL", 1000, 20 * 300, "IOC")
    copy = TypedBook.restore(json.loads(json.dumps(book.snapshot())))
    for b in (book, copy):
        assert b.final_status("o1") == "CANCELLED"
        assert b.final_status("o0") == "FILLED"
        assert b.final_status("s") == "FILLED"
        assert b.submit("o2", "m1", "BUY", 1000, 20, "GTC")[0].reason == "DUPLICATE_ORDER_ID"  # type: ignore[union-attr]
        assert b.cancel("o3")[0].reason == "ORDER_FINAL"  # type: ignore[union-attr]
    assert copy.state_hash() == book.state_hash()
    assert len(book.snapshot()["final"]) == 601
    book.roll_day(DAY2)
    assert book.final_status("o1") is None
    assert book.snapshot()["final"] == []


# ---------------------------------------------------------------- raw events


def test_raw_events_are_plain_tuples_that_the_gc_untracks() -> None:
    book = make_book()
    book.submit("s1", "m1", "SELL", 1000, 20, "GTC")
    raw = book.raw.submit("b1", "m2", "BUY", 1000, 20, "IOC")
    assert [e[0] for e in raw] == ["OrderAccepted", "Trade", "OrderFilled", "OrderFilled"]
    assert all(type(e) is tuple for e in raw)
    assert raw[1] == ("Trade", 4, "GOLD1-4", "s1", "b1", "m1", "m2", "BUY", 1000, 20, DAY1)
    assert typed(raw[1]) == Trade(4, "GOLD1-4", "s1", "b1", "m1", "m2", "BUY", 1000, 20, DAY1)
    # Kept events cost the garbage collector nothing after their first collection.
    gc.collect()
    assert not any(gc.is_tracked(e) for e in raw)
    with pytest.raises(ValueError, match="malformed"):
        typed(raw[1][:-1])
