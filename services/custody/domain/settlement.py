"""Netting one business day's settlement into account movements and balanced postings.

Pure: given the day's trades (custody's own obligations) and the withdrawals to post, say
how every account's settled, held and pending amounts change, and which postings record it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Account keys: ("member", member_id, asset), ("fee", "", "CNY"), ("bank", "", "CNY").
AccountKey = tuple[str, str, str]
FEE_ACCOUNT: AccountKey = ("fee", "", "CNY")
BANK_ACCOUNT: AccountKey = ("bank", "", "CNY")


@dataclass(frozen=True, slots=True)
class SettlementTrade:
    trade_id: str
    instrument: str
    price_fen: int
    quantity: int
    buyer_member_id: str
    seller_member_id: str
    buyer_fee_fen: int
    seller_fee_fen: int

    @property
    def amount_fen(self) -> int:
        return self.price_fen * self.quantity

    def comparable(self) -> tuple[str, int, int, str, str, int, int]:
        return (
            self.instrument,
            self.price_fen,
            self.quantity,
            self.buyer_member_id,
            self.seller_member_id,
            self.buyer_fee_fen,
            self.seller_fee_fen,
        )


@dataclass(frozen=True, slots=True)
class SettlementWithdrawal:
    withdrawal_id: str
    member_id: str
    amount_fen: int


@dataclass(slots=True)
class Delta:
    settled: int = 0
    held: int = 0
    pending_in: int = 0
    pending_out: int = 0


@dataclass(frozen=True, slots=True)
class Posting:
    account: AccountKey
    amount: int
    kind: str
    reference: str


@dataclass(slots=True)
class MemberSummary:
    member_id: str
    net_cash_fen: int = 0  # sales − purchases, before fees
    fees_fen: int = 0
    withdrawals_fen: int = 0
    units: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Netting:
    deltas: dict[AccountKey, Delta]
    postings: list[Posting]
    members: dict[str, MemberSummary]
    trade_count: int
    gross_amount_fen: int
    fee_total_fen: int
    withdrawal_total_fen: int


@dataclass(slots=True)
class Leg:
    """One member account's share of a day's trades (cash: asset "CNY"; units: the code).

    ``net`` is sales − purchases for cash (before fees) and bought − sold for units;
    ``fees`` the member's fees (cash only); ``pending_in``/``pending_out`` the obligations
    the settlement clears from the account.
    """

    member_id: str
    asset: str
    net: int = 0
    fees: int = 0
    pending_in: int = 0
    pending_out: int = 0


@dataclass(frozen=True, slots=True)
class TradeTotals:
    trade_count: int
    gross_amount_fen: int
    fee_total_fen: int


def trade_legs(trades: Iterable[SettlementTrade]) -> tuple[list[Leg], TradeTotals]:
    """Aggregate trades into legs (the settlement batch does the same in SQL)."""
    legs: dict[tuple[str, str], Leg] = {}

    def leg(member_id: str, asset: str) -> Leg:
        found = legs.get((member_id, asset))
        if found is None:
            found = legs[(member_id, asset)] = Leg(member_id, asset)
        return found

    count = gross = fee_total = 0
    for t in trades:
        count += 1
        amount = t.amount_fen
        gross += amount
        fee_total += t.buyer_fee_fen + t.seller_fee_fen
        buyer_cash = leg(t.buyer_member_id, "CNY")
        buyer_cash.net -= amount
        buyer_cash.fees += t.buyer_fee_fen
        buyer_cash.pending_out += amount + t.buyer_fee_fen
        seller_cash = leg(t.seller_member_id, "CNY")
        seller_cash.net += amount
        seller_cash.fees += t.seller_fee_fen
        seller_cash.pending_in += amount - t.seller_fee_fen
        buyer_units = leg(t.buyer_member_id, t.instrument)
        buyer_units.net += t.quantity
        buyer_units.pending_in += t.quantity
        seller_units = leg(t.seller_member_id, t.instrument)
        seller_units.net -= t.quantity
        seller_units.pending_out += t.quantity
    return list(legs.values()), TradeTotals(count, gross, fee_total)


def net(
    trades: Iterable[SettlementTrade], withdrawals: Iterable[SettlementWithdrawal], reference: str
) -> Netting:
    legs, totals = trade_legs(trades)
    return net_legs(legs, totals, withdrawals, reference)


def net_legs(
    legs: Iterable[Leg],
    totals: TradeTotals,
    withdrawals: Iterable[SettlementWithdrawal],
    reference: str,
) -> Netting:
    """The account movements and postings of a day: trade legs, fees, withdrawals.

    Every cash leg settles ``net − fees`` and clears its pending amounts; every units leg
    settles ``net``; the fee account receives every fee; each withdrawal moves its reserved
    cash to the bank account.
    """
    deltas: dict[AccountKey, Delta] = {}
    members: dict[str, MemberSummary] = {}

    def delta(key: AccountKey) -> Delta:
        found = deltas.get(key)
        if found is None:
            found = deltas[key] = Delta()
        return found

    def member(member_id: str) -> MemberSummary:
        found = members.get(member_id)
        if found is None:
            found = members[member_id] = MemberSummary(member_id)
        return found

    for lg in legs:
        d = delta(("member", lg.member_id, lg.asset))
        m = member(lg.member_id)
        if lg.asset == "CNY":
            d.settled += lg.net - lg.fees
            m.net_cash_fen += lg.net
            m.fees_fen += lg.fees
        else:
            d.settled += lg.net
            m.units[lg.asset] = m.units.get(lg.asset, 0) + lg.net
        d.pending_in -= lg.pending_in
        d.pending_out -= lg.pending_out
    fee_total = totals.fee_total_fen
    if fee_total:
        fee = delta(FEE_ACCOUNT)
        fee.settled += fee_total
        fee.pending_in -= fee_total

    withdrawal_total = 0
    withdrawal_list = sorted(withdrawals, key=lambda w: w.withdrawal_id)
    for w in withdrawal_list:
        withdrawal_total += w.amount_fen
        cash = delta(("member", w.member_id, "CNY"))
        cash.settled -= w.amount_fen
        cash.held -= w.amount_fen
        member(w.member_id).withdrawals_fen += w.amount_fen
    if withdrawal_total:
        delta(BANK_ACCOUNT).settled += withdrawal_total

    postings: list[Posting] = []
    for member_id in sorted(members):
        m = members[member_id]
        key: AccountKey = ("member", member_id, "CNY")
        if m.net_cash_fen:
            postings.append(Posting(key, m.net_cash_fen, "TRADE_NET", reference))
        if m.fees_fen:
            postings.append(Posting(key, -m.fees_fen, "FEE", reference))
        for instrument in sorted(m.units):
            if m.units[instrument]:
                postings.append(
                    Posting(
                        ("member", member_id, instrument),
                        m.units[instrument],
                        "SETTLEMENT_UNITS",
                        reference,
                    )
                )
    if fee_total:
        postings.append(Posting(FEE_ACCOUNT, fee_total, "FEE", reference))
    for w in withdrawal_list:
        postings.append(
            Posting(("member", w.member_id, "CNY"), -w.amount_fen, "WITHDRAWAL", w.withdrawal_id)
        )
        postings.append(Posting(BANK_ACCOUNT, w.amount_fen, "WITHDRAWAL", w.withdrawal_id))
    return Netting(
        deltas=deltas,
        postings=postings,
        members=members,
        trade_count=totals.trade_count,
        gross_amount_fen=totals.gross_amount_fen,
        fee_total_fen=fee_total,
        withdrawal_total_fen=withdrawal_total,
    )


@dataclass(frozen=True, slots=True)
class Mismatch:
    missing_from_batch: list[str]
    unknown_to_custody: list[str]
    different: list[str]

    @property
    def empty(self) -> bool:
        return not (self.missing_from_batch or self.unknown_to_custody or self.different)


def compare(
    batch: Sequence[SettlementTrade], obligations: Mapping[str, SettlementTrade]
) -> Mismatch:
    """Differences between a settlement batch and custody's own obligations for the day."""
    seen: set[str] = set()
    unknown: list[str] = []
    different: list[str] = []
    for t in batch:
        if t.trade_id in seen:
            different.append(t.trade_id)  # listed twice
            continue
        seen.add(t.trade_id)
        ours = obligations.get(t.trade_id)
        if ours is None:
            unknown.append(t.trade_id)
        elif ours.comparable() != t.comparable():
            different.append(t.trade_id)
    missing = sorted(set(obligations) - seen)
    return Mismatch(missing, sorted(unknown), sorted(different))
