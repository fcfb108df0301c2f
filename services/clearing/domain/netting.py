"""End-of-day netting: per-member cash, fees and units, and the bank instructions.

Conservation laws this module guarantees (and checks before returning):

* Σ over members of net cash (sales − purchases, before fees) = 0: every trade's
  amount is credited to its seller and debited to its buyer.
* Σ over members of fees = fee total = the credit to the fee income sub-account.
* For every product, Σ over members of net units = 0.
* In the instructions, Σ DEBIT − Σ CREDIT = Σ WITHDRAWAL.

Instruction order (deterministic): TRADE_NET rows by member_id, then FEE debits
by member_id, then the FEE credit to the exchange's fee sub-account, then
WITHDRAWAL rows by withdrawal id. A member whose net cash is exactly zero gets no
TRADE_NET row (a zero-amount row books nothing; the bank statement then shows no
TRADE_NET movement for that member either, and reconciliation expects none). A
member who owes no fees gets no FEE row, and there is no exchange FEE credit when
the fee total is zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from services.clearing.domain.model import Direction, Instruction, InstructionKind
from shared.money import check_fen, check_units


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    instrument: str
    price_fen: int
    quantity: int
    amount_fen: int
    buyer_member_id: str
    seller_member_id: str
    buyer_fee_fen: int
    seller_fee_fen: int

    def __post_init__(self) -> None:
        check_fen(self.price_fen)
        check_units(self.quantity)
        check_fen(self.amount_fen)
        check_fen(self.buyer_fee_fen)
        check_fen(self.seller_fee_fen)
        if self.price_fen <= 0:
            raise ValueError(f"trade {self.trade_id}: price must be positive")
        if self.amount_fen != self.price_fen * self.quantity:
            raise ValueError(f"trade {self.trade_id}: amount is not price x quantity")
        for fee in (self.buyer_fee_fen, self.seller_fee_fen):
            if not 0 <= fee <= self.amount_fen:
                raise ValueError(f"trade {self.trade_id}: a fee must be within 0..amount")
        if self.buyer_member_id == self.seller_member_id:
            raise ValueError(f"trade {self.trade_id}: buyer and seller are the same member")


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A withdrawal posted by the day's settlement; its id is its bank reference."""

    withdrawal_id: str
    member_id: str
    amount_fen: int

    def __post_init__(self) -> None:
        check_fen(self.amount_fen)
        if self.amount_fen <= 0:
            raise ValueError(f"withdrawal {self.withdrawal_id}: amount must be positive")


@dataclass(frozen=True, slots=True)
class MemberCash:
    member_id: str
    sub_account: str
    #: Sales − purchases, before fees (the TRADE_NET amount, signed: + is a credit).
    net_cash_fen: int
    fees_fen: int
    withdrawals_fen: int

    @property
    def net_after_fees_fen(self) -> int:
        """What settlement changes the member's cash by, withdrawals excluded."""
        return self.net_cash_fen - self.fees_fen


@dataclass(frozen=True, slots=True)
class MemberUnits:
    member_id: str
    instrument: str
    #: Units bought − units sold.
    net_units: int


@dataclass(frozen=True, slots=True)
class Settlement:
    business_date: date
    trade_count: int
    #: One row per member with trades or withdrawals, ordered by member_id.
    members: tuple[MemberCash, ...]
    #: One row per (member, product) traded, net zero included, ordered by both.
    units: tuple[MemberUnits, ...]
    fee_total_fen: int
    withdrawal_total_fen: int
    instructions: tuple[Instruction, ...]


def reference(business_date: date, code: str, party: str) -> str:
    return f"D{business_date:%Y%m%d}-{code}-{party}"


def trade_net_reference(business_date: date, member_id: str) -> str:
    return reference(business_date, "TN", member_id)


def fee_reference(business_date: date, member_id: str) -> str:
    return reference(business_date, "FE", member_id)


def fee_exchange_reference(business_date: date) -> str:
    return reference(business_date, "FE", "EXCHANGE")


def net_settlement(
    business_date: date,
    trades: Iterable[Trade],
    withdrawals: Iterable[Withdrawal],
    sub_accounts: Mapping[str, str],
    fee_sub_account: str,
) -> Settlement:
    """Net one business day's trades and posted withdrawals.

    ``sub_accounts`` maps member_id → custody sub-account number; every member
    that traded or withdrew must be in it.
    """
    trade_list = list(trades)
    seen_trades: set[str] = set()
    net: dict[str, int] = {}
    fees: dict[str, int] = {}
    units: dict[tuple[str, str], int] = {}
    for trade in trade_list:
        if trade.trade_id in seen_trades:
            raise ValueError(f"trade {trade.trade_id} appears twice")
        seen_trades.add(trade.trade_id)
        buyer, seller = trade.buyer_member_id, trade.seller_member_id
        net[seller] = net.get(seller, 0) + trade.amount_fen
        net[buyer] = net.get(buyer, 0) - trade.amount_fen
        fees[seller] = fees.get(seller, 0) + trade.seller_fee_fen
        fees[buyer] = fees.get(buyer, 0) + trade.buyer_fee_fen
        units[(buyer, trade.instrument)] = units.get((buyer, trade.instrument), 0) + trade.quantity
        units[(seller, trade.instrument)] = (
            units.get((seller, trade.instrument), 0) - trade.quantity
        )
    return settle_aggregates(
        business_date,
        len(trade_list),
        net,
        fees,
        units,
        withdrawals,
        sub_accounts,
        fee_sub_account,
    )


def settle_aggregates(
    business_date: date,
    trade_count: int,
    net: Mapping[str, int],
    fees: Mapping[str, int],
    units: Mapping[tuple[str, str], int],
    withdrawals: Iterable[Withdrawal],
    sub_accounts: Mapping[str, str],
    fee_sub_account: str,
) -> Settlement:
    """The settlement of a day already aggregated per member (net cash, fees) and per
    (member, product) (net units), e.g. by the database; :func:`net_settlement` aggregates
    trades and calls this. Every member with a fees entry must have a net entry."""
    withdrawal_list = sorted(withdrawals, key=lambda w: w.withdrawal_id)
    drawn: dict[str, int] = {}
    seen_withdrawals: set[str] = set()
    for withdrawal in withdrawal_list:
        if withdrawal.withdrawal_id in seen_withdrawals:
            raise ValueError(f"withdrawal {withdrawal.withdrawal_id} appears twice")
        seen_withdrawals.add(withdrawal.withdrawal_id)
        drawn[withdrawal.member_id] = drawn.get(withdrawal.member_id, 0) + withdrawal.amount_fen

    member_ids = sorted(set(net) | set(drawn))
    for member_id in member_ids:
        if member_id not in sub_accounts:
            raise ValueError(f"member {member_id} has no custody sub-account")
    members = tuple(
        MemberCash(
            member_id=m,
            sub_account=sub_accounts[m],
            net_cash_fen=net.get(m, 0),
            fees_fen=fees.get(m, 0),
            withdrawals_fen=drawn.get(m, 0),
        )
        for m in member_ids
    )
    fee_total = sum(fees.values())
    withdrawal_total = sum(drawn.values())

    rows: list[tuple[str, str | None, Direction, int, InstructionKind, str]] = []
    for mc in members:
        if mc.net_cash_fen != 0:
            direction = Direction.CREDIT if mc.net_cash_fen > 0 else Direction.DEBIT
            rows.append(
                (
                    mc.sub_account,
                    mc.member_id,
                    direction,
                    abs(mc.net_cash_fen),
                    InstructionKind.TRADE_NET,
                    trade_net_reference(business_date, mc.member_id),
                )
            )
    for mc in members:
        if mc.fees_fen > 0:
            rows.append(
                (
                    mc.sub_account,
                    mc.member_id,
                    Direction.DEBIT,
                    mc.fees_fen,
                    InstructionKind.FEE,
                    fee_reference(business_date, mc.member_id),
                )
            )
    if fee_total > 0:
        rows.append(
            (
                fee_sub_account,
                None,
                Direction.CREDIT,
                fee_total,
                InstructionKind.FEE,
                fee_exchange_reference(business_date),
            )
        )
    for withdrawal in withdrawal_list:
        rows.append(
            (
                sub_accounts[withdrawal.member_id],
                withdrawal.member_id,
                Direction.DEBIT,
                withdrawal.amount_fen,
                InstructionKind.WITHDRAWAL,
                withdrawal.withdrawal_id,
            )
        )
    instructions = tuple(
        Instruction(
            business_date=business_date,
            seq=i,
            sub_account=sub,
            member_id=member,
            direction=direction,
            amount_fen=amount,
            kind=kind,
            reference=ref,
        )
        for i, (sub, member, direction, amount, kind, ref) in enumerate(rows, start=1)
    )
    settlement = Settlement(
        business_date=business_date,
        trade_count=trade_count,
        members=members,
        units=tuple(
            MemberUnits(member_id=m, instrument=i, net_units=q)
            for (m, i), q in sorted(units.items())
        ),
        fee_total_fen=fee_total,
        withdrawal_total_fen=withdrawal_total,
        instructions=instructions,
    )
    check_settlement(settlement)
    return settlement


def check_settlement(settlement: Settlement) -> None:
    """Raise ValueError if a conservation law does not hold."""
    if sum(m.net_cash_fen for m in settlement.members) != 0:
        raise ValueError("net cash over members does not sum to zero")
    if sum(m.fees_fen for m in settlement.members) != settlement.fee_total_fen:
        raise ValueError("member fees do not sum to the fee total")
    per_product: dict[str, int] = {}
    for u in settlement.units:
        per_product[u.instrument] = per_product.get(u.instrument, 0) + u.net_units
    if any(per_product.values()):
        raise ValueError("net units of a product do not sum to zero")
    debit = sum(i.amount_fen for i in settlement.instructions if i.direction is Direction.DEBIT)
    credit = sum(i.amount_fen for i in settlement.instructions if i.direction is Direction.CREDIT)
    if debit - credit != settlement.withdrawal_total_fen:
        raise ValueError("instruction totals: DEBIT - CREDIT != WITHDRAWAL")
    references = [i.reference for i in settlement.instructions]
    if len(set(references)) != len(references):
        raise ValueError("instruction references are not unique")
