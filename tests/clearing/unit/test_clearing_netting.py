"""Netting: per-member cash, fees and units, and the instructions, against hand numbers."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.clearing.domain.bank_files import parse_instruction_file, write_instruction_file
from services.clearing.domain.model import Direction, InstructionKind
from services.clearing.domain.netting import Trade, Withdrawal, net_settlement

D = date(2026, 11, 20)
SUBS = {"m_a": "SUBA", "m_b": "SUBB", "m_c": "SUBC", "m_d": "SUBD"}
FEE_SUB = "SUBFEE0001"


def trade(
    tid: str,
    buyer: str,
    seller: str,
    price: int,
    qty: int,
    bfee: int,
    sfee: int,
    instrument: str = "P1",
) -> Trade:
    return Trade(tid, instrument, price, qty, price * qty, buyer, seller, bfee, sfee)


SCENARIO_TRADES = [
    # A buys 600 @ 100.00 from B: 60,000.00, both pay 5.00
    trade("t1", "m_a", "m_b", 100_00, 600, 500, 500),
    # C buys 10 @ 100.00 from B's same sell order: 1,000.00, B already at the cap
    trade("t2", "m_c", "m_b", 100_00, 10, 200, 0),
]
SCENARIO_WITHDRAWALS = [Withdrawal("w_c1", "m_c", 300_00)]


def test_scenario_members_units_and_totals() -> None:
    s = net_settlement(D, SCENARIO_TRADES, SCENARIO_WITHDRAWALS, SUBS, FEE_SUB)
    got = {
        m.member_id: (m.sub_account, m.net_cash_fen, m.fees_fen, m.withdrawals_fen)
        for m in s.members
    }
    assert got == {
        "m_a": ("SUBA", -60_000_00, 500, 0),
        "m_b": ("SUBB", 61_000_00, 500, 0),
        "m_c": ("SUBC", -1_000_00, 200, 300_00),
    }
    assert {(u.member_id, u.instrument): u.net_units for u in s.units} == {
        ("m_a", "P1"): 600,
        ("m_b", "P1"): -610,
        ("m_c", "P1"): 10,
    }
    assert s.fee_total_fen == 1_200
    assert s.withdrawal_total_fen == 300_00
    assert s.trade_count == 2
    a = next(m for m in s.members if m.member_id == "m_a")
    assert a.net_after_fees_fen == -60_005_00


def test_scenario_instructions() -> None:
    s = net_settlement(D, SCENARIO_TRADES, SCENARIO_WITHDRAWALS, SUBS, FEE_SUB)
    rows = [
        (
            i.seq,
            i.sub_account,
            i.member_id,
            i.direction.value,
            i.amount_fen,
            i.kind.value,
            i.reference,
        )
        for i in s.instructions
    ]
    assert rows == [
        (1, "SUBA", "m_a", "DEBIT", 60_000_00, "TRADE_NET", "D20261120-TN-m_a"),
        (2, "SUBB", "m_b", "CREDIT", 61_000_00, "TRADE_NET", "D20261120-TN-m_b"),
        (3, "SUBC", "m_c", "DEBIT", 1_000_00, "TRADE_NET", "D20261120-TN-m_c"),
        (4, "SUBA", "m_a", "DEBIT", 500, "FEE", "D20261120-FE-m_a"),
        (5, "SUBB", "m_b", "DEBIT", 500, "FEE", "D20261120-FE-m_b"),
        (6, "SUBC", "m_c", "DEBIT", 200, "FEE", "D20261120-FE-m_c"),
        (7, "SUBFEE0001", None, "CREDIT", 1_200, "FEE", "D20261120-FE-EXCHANGE"),
        (8, "SUBC", "m_c", "DEBIT", 300_00, "WITHDRAWAL", "w_c1"),
    ]


def test_same_input_in_another_order_gives_the_same_instructions() -> None:
    a = net_settlement(D, SCENARIO_TRADES, SCENARIO_WITHDRAWALS, SUBS, FEE_SUB)
    b = net_settlement(D, list(reversed(SCENARIO_TRADES)), SCENARIO_WITHDRAWALS, SUBS, FEE_SUB)
    assert a.instructions == b.instructions


def test_member_with_zero_net_gets_no_trade_net_row_but_pays_fees() -> None:
    trades = [
        trade("t1", "m_a", "m_b", 10_00, 10, 200, 200),
        trade("t2", "m_b", "m_a", 10_00, 10, 200, 200),
    ]
    s = net_settlement(D, trades, [], SUBS, FEE_SUB)
    assert [(i.kind.value, i.reference, i.amount_fen) for i in s.instructions] == [
        ("FEE", "D20261120-FE-m_a", 400),
        ("FEE", "D20261120-FE-m_b", 400),
        ("FEE", "D20261120-FE-EXCHANGE", 800),
    ]
    assert {u.net_units for u in s.units} == {0}


def test_withdrawals_only_day() -> None:
    s = net_settlement(
        D, [], [Withdrawal("w_2", "m_d", 1), Withdrawal("w_1", "m_a", 5)], SUBS, FEE_SUB
    )
    assert [(i.seq, i.reference, i.sub_account) for i in s.instructions] == [
        (1, "w_1", "SUBA"),
        (2, "w_2", "SUBD"),
    ]
    assert s.fee_total_fen == 0


def test_empty_day() -> None:
    s = net_settlement(D, [], [], SUBS, FEE_SUB)
    assert s.instructions == ()
    assert s.members == ()


def test_duplicate_trade_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        net_settlement(D, [SCENARIO_TRADES[0], SCENARIO_TRADES[0]], [], SUBS, FEE_SUB)


def test_member_without_sub_account_rejected() -> None:
    with pytest.raises(ValueError, match="no custody sub-account"):
        net_settlement(D, [trade("t1", "m_x", "m_a", 1_00, 1, 0, 0)], [], SUBS, FEE_SUB)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount_fen": 999}, "price x quantity"),
        ({"buyer_fee_fen": 1_001}, "fee"),
        ({"seller_fee_fen": -1}, "fee"),
        ({"seller_member_id": "m_a"}, "same member"),
    ],
)
def test_invalid_trades(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "trade_id": "t",
        "instrument": "P1",
        "price_fen": 10_00,
        "quantity": 1,
        "amount_fen": 10_00,
        "buyer_member_id": "m_a",
        "seller_member_id": "m_b",
        "buyer_fee_fen": 0,
        "seller_fee_fen": 0,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Trade(**base)  # type: ignore[arg-type]


members = st.sampled_from(sorted(SUBS))


@st.composite
def trades_strategy(draw: st.DrawFn) -> list[Trade]:
    n = draw(st.integers(0, 25))
    out = []
    for k in range(n):
        buyer, seller = draw(st.lists(members, min_size=2, max_size=2, unique=True))
        price = draw(st.integers(1, 200_000_00))
        qty = draw(st.integers(1, 1_000))
        amount = price * qty
        bfee = draw(st.integers(0, min(500, amount)))
        sfee = draw(st.integers(0, min(500, amount)))
        instrument = draw(st.sampled_from(["P1", "P2", "P3"]))
        out.append(Trade(f"t{k}", instrument, price, qty, amount, buyer, seller, bfee, sfee))
    return out


@settings(max_examples=150, deadline=None)
@given(
    trades=trades_strategy(),
    withdrawals=st.lists(st.tuples(members, st.integers(1, 10**8)), max_size=5),
)
def test_conservation_laws(trades: list[Trade], withdrawals: list[tuple[str, int]]) -> None:
    ws = [Withdrawal(f"w_{k}", m, amt) for k, (m, amt) in enumerate(withdrawals)]
    s = net_settlement(D, trades, ws, SUBS, FEE_SUB)

    # independent per-member sums
    exp_net: dict[str, int] = {}
    exp_fee: dict[str, int] = {}
    for t in trades:
        exp_net[t.seller_member_id] = exp_net.get(t.seller_member_id, 0) + t.amount_fen
        exp_net[t.buyer_member_id] = exp_net.get(t.buyer_member_id, 0) - t.amount_fen
        exp_fee[t.seller_member_id] = exp_fee.get(t.seller_member_id, 0) + t.seller_fee_fen
        exp_fee[t.buyer_member_id] = exp_fee.get(t.buyer_member_id, 0) + t.buyer_fee_fen
    for m in s.members:
        assert m.net_cash_fen == exp_net.get(m.member_id, 0)
        assert m.fees_fen == exp_fee.get(m.member_id, 0)

    rows = s.instructions
    tn = [
        i.amount_fen if i.direction is Direction.CREDIT else -i.amount_fen
        for i in rows
        if i.kind is InstructionKind.TRADE_NET
    ]
    assert sum(tn) == 0  # Σ TRADE_NET = 0 across members
    assert all(i.amount_fen > 0 for i in rows)
    fee_debits = sum(
        i.amount_fen
        for i in rows
        if i.kind is InstructionKind.FEE and i.direction is Direction.DEBIT
    )
    fee_credits = [
        i for i in rows if i.kind is InstructionKind.FEE and i.direction is Direction.CREDIT
    ]
    total_fees = sum(t.buyer_fee_fen + t.seller_fee_fen for t in trades)
    assert fee_debits == total_fees == s.fee_total_fen
    if total_fees:
        assert [(c.sub_account, c.amount_fen) for c in fee_credits] == [(FEE_SUB, total_fees)]
    else:
        assert fee_credits == []
    debit = sum(i.amount_fen for i in rows if i.direction is Direction.DEBIT)
    credit = sum(i.amount_fen for i in rows if i.direction is Direction.CREDIT)
    assert debit - credit == sum(amt for _, amt in withdrawals)
    assert [i.seq for i in rows] == list(range(1, len(rows) + 1))
    assert len({i.reference for i in rows}) == len(rows)
    per_product: dict[str, int] = {}
    for u in s.units:
        per_product[u.instrument] = per_product.get(u.instrument, 0) + u.net_units
    assert set(per_product.values()) <= {0}
    # member cash after settlement + fee income changes custody only by withdrawals
    assert sum(
        m.net_after_fees_fen - m.withdrawals_fen for m in s.members
    ) + s.fee_total_fen == -sum(amt for _, amt in withdrawals)


@settings(max_examples=75, deadline=None)
@given(
    trades=trades_strategy(),
    withdrawals=st.lists(st.tuples(members, st.integers(1, 10**8)), max_size=5),
)
def test_instruction_file_from_any_day_rewrites_identically(
    trades: list[Trade], withdrawals: list[tuple[str, int]]
) -> None:
    ws = [Withdrawal(f"w_{k}", m, amt) for k, (m, amt) in enumerate(withdrawals)]
    s = net_settlement(D, trades, ws, SUBS, FEE_SUB)
    text = write_instruction_file(D, s.instructions)
    assert write_instruction_file(D, s.instructions) == text
    assert parse_instruction_file(text, expected_date=D).instructions == s.instructions
    # the #TOTAL row, read from the text with plain string handling
    body = text.splitlines()[1:-1]
    total = text.splitlines()[-1].split(",")
    cents = {"DEBIT": 0, "CREDIT": 0}
    withdrawn = 0
    for line in body:
        f = line.split(",")
        whole, frac = f[5].split(".")
        fen = int(whole) * 100 + int(frac)
        cents[f[4]] += fen
        withdrawn += fen if f[6] == "WITHDRAWAL" else 0
    assert total[0] == "#TOTAL"
    assert int(total[1]) == len(body)
    assert total[2] == f"{cents['DEBIT'] // 100}.{cents['DEBIT'] % 100:02d}"
    assert total[3] == f"{cents['CREDIT'] // 100}.{cents['CREDIT'] % 100:02d}"
    assert cents["DEBIT"] - cents["CREDIT"] == withdrawn == sum(a for _, a in withdrawals)
