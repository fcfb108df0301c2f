"""Clearing benchmark, in process: netting + the instruction file for a day of trades, and
reconciliation of a statement, each against a naive baseline measured in the same run.

    .venv/bin/python bench/clearing/bench_clearing.py [--trades 1000000] [--members 10000]
        [--products 50] [--accounts 100000]

Prints the figures recorded in docs/benchmarks.md ("Clearing").
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.clearing.domain.bank_files import (
    AccountType,
    BankStatement,
    StatementBalance,
    StatementMovement,
    parse_statement,
    write_instruction_file,
    write_statement,
)
from services.clearing.domain.model import Direction, MovementKind
from services.clearing.domain.netting import Trade, net_settlement, trade_net_reference
from services.clearing.domain.reconciliation import (
    ExchangeMovement,
    ExchangeSide,
    ExchangeSubAccount,
    reconcile,
)
from shared.fees import DEFAULT_FEE_SCHEDULE

DAY = date(2026, 11, 20)
T = TypeVar("T")


def timed(label: str, fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - started
    print(f"  {label}: {elapsed:.2f} s", flush=True)
    return value, elapsed


def make_trades(n: int, members: int, products: int, seed: int = 7) -> list[Trade]:
    rng = random.Random(seed)
    ids = [f"m_{i:06d}" for i in range(members)]
    codes = [f"P{i:03d}" for i in range(products)]
    trades = []
    for k in range(n):
        buyer, seller = rng.sample(ids, 2)
        price = rng.randint(9_000, 11_000)
        qty = rng.randint(1, 800)
        amount = price * qty
        fee = DEFAULT_FEE_SCHEDULE.tier_fee_fen(amount)
        trades.append(
            Trade(f"t{k:08d}", rng.choice(codes), price, qty, amount, buyer, seller, fee, fee)
        )
    return trades


def naive_net(trades: list[Trade], member_ids: list[str]) -> dict[str, tuple[int, int]]:
    """The obvious way: for each member, scan every trade (O(members x trades))."""
    out = {}
    for m in member_ids:
        cash = fees = 0
        for t in trades:
            if t.buyer_member_id == m:
                cash -= t.amount_fen
                fees += t.buyer_fee_fen
            elif t.seller_member_id == m:
                cash += t.amount_fen
                fees += t.seller_fee_fen
        out[m] = (cash, fees)
    return out


def bench_netting(n: int, members: int, products: int) -> None:
    print(f"netting + instruction file: {n:,} trades, {members:,} members, {products} products")
    trades, _ = timed("generate trades (not measured)", lambda: make_trades(n, members, products))
    subs = {f"m_{i:06d}": f"SUB{i:07d}" for i in range(members)}
    settlement, t_net = timed(
        "net_settlement", lambda: net_settlement(DAY, trades, [], subs, "SUBFEE0001")
    )
    content, t_file = timed(
        "write_instruction_file", lambda: write_instruction_file(DAY, settlement.instructions)
    )
    print(
        f"  => {t_net + t_file:.2f} s for {len(settlement.instructions):,} instruction rows "
        f"({len(content) / 1e6:.1f} MB), {n / (t_net + t_file):,.0f} trades/s"
    )
    sample = [f"m_{i:06d}" for i in range(50)]
    _, t_naive = timed("baseline: per-member scan, 50 members", lambda: naive_net(trades, sample))
    projected = t_naive / len(sample) * members
    print(
        f"  baseline projected to {members:,} members: {projected:,.0f} s "
        f"(x{projected / (t_net + t_file):,.0f} slower)"
    )


def make_recon(accounts: int, seed: int = 11) -> tuple[ExchangeSide, str]:
    rng = random.Random(seed)
    subs = []
    moves = []
    balances = [StatementBalance("MASTER0001", AccountType.MASTER, None, 0, 0)]
    bank_moves = []
    for i in range(accounts):
        account, member = f"SUB{i:07d}", f"m_{i:06d}"
        closing = rng.randint(0, 10_000_000)
        subs.append(ExchangeSubAccount(account, member, closing))
        balances.append(StatementBalance(account, AccountType.SUB, member, closing, closing))
        amount = rng.randint(1, 100_000)
        ref = trade_net_reference(DAY, member)
        moves.append(
            ExchangeMovement(ref, account, member, MovementKind.TRADE_NET, Direction.DEBIT, amount)
        )
        bank_moves.append(
            StatementMovement(
                account,
                AccountType.SUB,
                member,
                MovementKind.TRADE_NET,
                ref,
                Direction.DEBIT,
                amount,
            )
        )
    total = sum(s.settled_fen for s in subs)
    balances[0] = StatementBalance("MASTER0001", AccountType.MASTER, None, total, total)
    side = ExchangeSide(tuple(subs), total, tuple(moves))
    statement = BankStatement(DAY, tuple(balances), tuple(bank_moves))
    return side, write_statement(statement)


def naive_recon(side: ExchangeSide, statement: BankStatement) -> int:
    """The obvious way: for each exchange sub-account, search the bank's rows (O(n^2))."""
    breaks = 0
    bank = list(statement.sub_balances)
    for sub in side.sub_accounts:
        found = next((b for b in bank if b.account == sub.account), None)
        if found is None or found.closing_fen != sub.settled_fen:
            breaks += 1
    return breaks


def bench_recon(accounts: int) -> None:
    print(f"reconciliation: {accounts:,} sub-accounts, one movement each")
    (side, text), _ = timed("generate (not measured)", lambda: make_recon(accounts))
    statement, t_parse = timed("parse_statement", lambda: parse_statement(text, DAY))
    report, t_rec = timed("reconcile", lambda: reconcile(DAY, side, statement))
    assert report.balanced
    print(f"  => {t_parse + t_rec:.2f} s ({len(text) / 1e6:.1f} MB statement), balanced")
    n = 2_000
    small_side = ExchangeSide(side.sub_accounts[:n], 0, ())
    _, t_naive = timed(
        f"baseline: linear search, {n:,} accounts", lambda: naive_recon(small_side, statement)
    )
    # The naive search scans the bank's rows up to the match: time grows with accounts².
    projected = t_naive * (accounts / n) ** 2
    print(
        f"  baseline projected to {accounts:,} accounts: {projected:,.0f} s "
        f"(x{projected / (t_parse + t_rec):,.0f} slower)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=100_000)
    args = parser.parse_args()
    bench_netting(args.trades, args.members, args.products)
    bench_recon(args.accounts)


if __name__ == "__main__":
    main()
