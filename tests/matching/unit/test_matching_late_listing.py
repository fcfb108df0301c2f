"""A ``list`` that reaches a shard after its ``roll`` (custody's and clearing's commands come
on two outbox streams): the book opens on its listing date and rolls forward at once."""

from services.matching.engine import ShardEngine

AT = "2026-01-02T15:00:00Z"


def listing(code: str, business_date: str) -> dict[str, object]:
    return {
        "command": "list",
        "instrument": code,
        "tick_fen": 1,
        "lot": 1,
        "min_qty": 1,
        "band_low_fen": 9_000,
        "band_high_fen": 11_000,
        "reference_price_fen": 10_000,
        "business_date": business_date,
        "state": "trading",
    }


def test_list_after_roll_reports_the_missed_day() -> None:
    engine = ShardEngine(0)
    assert engine.apply(1, listing("EARLY", "2026-01-02"), AT) == []
    rolled = engine.apply(2, {"command": "roll", "business_date": "2026-01-03"}, AT)
    assert [(o.instrument, [e["type"] for e in o.events]) for o in rolled] == [
        ("EARLY", ["DayRolled"])
    ]
    late = engine.apply(3, listing("LATE", "2026-01-02"), AT)
    assert [(o.instrument, o.events[0]["type"]) for o in late] == [("LATE", "DayRolled")]
    event = late[0].events[0]
    assert (event["previous_date"], event["business_date"]) == ("2026-01-02", "2026-01-03")
    assert engine.books["LATE"].business_date.isoformat() == "2026-01-03"
    # The next roll rolls both books by one day.
    after = engine.apply(4, {"command": "roll", "business_date": "2026-01-04"}, AT)
    assert sorted(o.instrument for o in after) == ["EARLY", "LATE"]
    assert all(o.events[0]["type"] == "DayRolled" for o in after)


def test_list_on_the_shards_date_reports_nothing() -> None:
    engine = ShardEngine(0)
    engine.apply(1, {"command": "roll", "business_date": "2026-01-03"}, AT)
    assert engine.apply(2, listing("NEW", "2026-01-03"), AT) == []
    assert engine.books["NEW"].business_date.isoformat() == "2026-01-03"
