"""The end-of-day run (日终): roll, wait for completeness, net, settle, write the
instruction file, report.

The roll is written when staff trigger the run, in ONE transaction with the run record:
the run row, the new business date, ``business_date.rolled`` and a ``roll`` command to
every matching shard (through the outbox). Every later phase runs in a background task,
commits its result and advances ``phase``; a process that dies resumes any unfinished run
where it stopped. Settlement is idempotent twice over: the run records custody's result,
and custody's batch is keyed by ``eod-<date>`` (a repeat answers the stored result).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import text

from services.clearing import store
from services.clearing.capture import INBOX_CONSUMER
from services.clearing.custody_client import CustodyClient, CustodyRefused
from services.clearing.domain.bank_files import instruction_totals, write_instruction_file
from services.clearing.domain.model import InstructionKind
from services.clearing.domain.netting import Settlement, Withdrawal, settle_aggregates
from services.clearing.phases import DONE, PHASES
from services.clearing.settings import ClearingSettings
from shared.clock import rfc3339, utc_now
from shared.contracts import (
    BOOK_COMMAND,
    BUSINESS_DATE_ROLLED,
    SETTLEMENT_COMPLETED,
    SettledMember,
    SettlementCompleted,
    book_stream,
    shard_routing_key,
)
from shared.db import unit_of_work
from shared.errors import ProblemError
from shared.faults import crash_point
from shared.messaging.outbox import Draft
from shared.money import format_fen, parse_fen

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

#: Custody refusals that clear by themselves: the roll has not reached custody yet, or
#: custody has not yet applied every trade of the day.
TRANSIENT = {"BUSINESS_DATE_OPEN", "SETTLEMENT_MISMATCH"}


def batch_id(business_date: date) -> str:
    return f"eod-{business_date.isoformat()}"


def _next(phase: str) -> str:
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else DONE


async def start_run(
    session: AsyncSession, runtime: ServiceRuntime, business_date: date
) -> tuple[bool, Any]:
    """Create the run and roll the day, or find the existing run. Returns (created, row)."""
    current = await store.business_date(session, lock=True)
    existing = await store.get_run(session, business_date)
    if existing is not None:
        if existing.status == "failed":
            await session.execute(
                text(
                    "UPDATE clearing.eod_runs SET status = 'running', error = NULL, "
                    "finished_at = NULL, updated_at = now() WHERE business_date = :d"
                ),
                {"d": business_date},
            )
            await store.audit(session, "eod.resumed", business_date, {})
            return True, await store.get_run(session, business_date)
        return False, existing
    if business_date != current:
        raise ProblemError(
            409,
            "BUSINESS_DATE_MISMATCH",
            f"the current business date is {current}; only it can be ended",
            extra={"current_business_date": current.isoformat()},
        )
    following = business_date + timedelta(days=1)
    now = utc_now()
    await session.execute(
        text(
            """
            INSERT INTO clearing.eod_runs (business_date, status, phase, batch_id, started_at)
            VALUES (:d, 'running', :phase, :b, :now)
            """
        ),
        {"d": business_date, "phase": _next("roll"), "b": batch_id(business_date), "now": now},
    )
    await session.execute(
        text(
            "UPDATE clearing.business_day SET business_date = :d, updated_at = now() WHERE id = 1"
        ),
        {"d": following},
    )
    outbox = runtime.outbox
    await outbox.add(
        session,
        [
            Draft(
                BUSINESS_DATE_ROLLED,
                BUSINESS_DATE_ROLLED,
                {
                    "previous_date": business_date.isoformat(),
                    "business_date": following.isoformat(),
                },
            )
        ],
    )
    for shard in range(runtime.settings.matching_shards):
        key = shard_routing_key(shard)
        await outbox.add(
            session,
            [
                Draft(
                    BOOK_COMMAND,
                    key,
                    {"command": "roll", "instrument": "", "business_date": following.isoformat()},
                )
            ],
            stream=f"clearing:{key}",
        )
    await store.audit(session, "eod.started", business_date, {"rolled_to": following.isoformat()})
    return True, await store.get_run(session, business_date)


class EodRunner:
    """A Component: runs every unfinished end-of-day run, one at a time."""

    def __init__(self, settings: ClearingSettings) -> None:
        self.settings = settings
        self.custody = CustodyClient(settings.url_of("custody"), settings.custody_timeout_seconds)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runtime: ServiceRuntime | None = None

    async def start(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime
        self._task = asyncio.create_task(self._loop(), name="eod-runner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def runtime(self) -> ServiceRuntime:
        assert self._runtime is not None
        return self._runtime

    async def _loop(self) -> None:
        while True:
            try:
                await self._run_unfinished()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("end-of-day loop error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()

    async def _run_unfinished(self) -> None:
        engine = self.runtime.engine
        async with engine.connect() as lock_conn:
            # One runner at a time across processes (a standby clearing waits here).
            locked = (
                await lock_conn.execute(
                    text("SELECT pg_try_advisory_lock(hashtext('clearing-eod'))")
                )
            ).scalar_one()
            if not locked:
                return
            try:
                async with unit_of_work(self.runtime.session_factory) as session:
                    dates = (
                        (
                            await session.execute(
                                text(
                                    "SELECT business_date FROM clearing.eod_runs "
                                    "WHERE status = 'running' ORDER BY business_date"
                                )
                            )
                        )
                        .scalars()
                        .all()
                    )
                for business_date in dates:
                    await self.run(business_date)
            finally:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext('clearing-eod'))"))
                await lock_conn.commit()

    async def run(self, business_date: date) -> None:
        """Drive one run from its recorded phase to the end."""
        while True:
            async with unit_of_work(self.runtime.session_factory) as session:
                row = await store.get_run(session, business_date)
            if row is None or row.status != "running" or row.phase == DONE:
                return
            phase = row.phase
            try:
                await self._phase(phase, business_date)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("end-of-day phase failed", extra={"phase": phase})
                async with unit_of_work(self.runtime.session_factory) as session:
                    await session.execute(
                        text(
                            "UPDATE clearing.eod_runs SET status = 'failed', error = :e, "
                            "finished_at = now(), updated_at = now() WHERE business_date = :d"
                        ),
                        {"d": business_date, "e": f"{phase}: {exc}"[:2000]},
                    )
                    await store.audit(
                        session, "eod.failed", business_date, {"phase": phase, "error": str(exc)}
                    )
                return
            async with unit_of_work(self.runtime.session_factory) as session:
                # When each phase ended (the run's phase breakdown; `at` is the commit's
                # transaction time, so the wall clock goes in the detail).
                await store.audit(
                    session,
                    "eod.phase",
                    business_date,
                    {"phase": phase, "ended_at": rfc3339(utc_now())},
                )
            crash_point(f"eod_after_{phase}")

    async def _advance(
        self, session: AsyncSession, business_date: date, phase: str, **columns: Any
    ) -> None:
        sets = "".join(f", {name} = :{name}" for name in columns)
        await session.execute(
            text(
                f"UPDATE clearing.eod_runs SET phase = :next, updated_at = now(){sets} "
                "WHERE business_date = :d AND phase = :phase"
            ),
            {"d": business_date, "phase": phase, "next": _next(phase), **columns},
        )

    async def _progress(self, business_date: date, done: int, total: int) -> None:
        async with unit_of_work(self.runtime.session_factory) as session:
            await session.execute(
                text(
                    "UPDATE clearing.eod_runs SET progress_done = :done, progress_total = :total, "
                    "updated_at = now() WHERE business_date = :d"
                ),
                {"d": business_date, "done": done, "total": total},
            )

    async def _phase(self, phase: str, business_date: date) -> None:
        if phase == "completeness":
            await self._completeness(business_date)
        elif phase == "net":
            await self._net(business_date)
        elif phase == "settle":
            await self._settle(business_date)
        elif phase == "instructions":
            await self._instructions(business_date)
        elif phase == "report":
            await self._report(business_date)
        else:
            raise RuntimeError(f"unknown phase {phase!r}")

    # ------------------------------------------------------------------ phases

    async def complete_books(self, business_date: date) -> tuple[int, int]:
        """(books that have delivered every event of D, books that must), for listed products."""
        listings = await self.custody.listings()
        required = sorted(code for code, listed in listings.items() if listed <= business_date)
        async with unit_of_work(self.runtime.session_factory) as session:
            rolls: dict[str, int] = {
                r[0]: r[1]
                for r in (
                    await session.execute(
                        text(
                            "SELECT instrument, stream_seq FROM clearing.day_rolls "
                            "WHERE previous_date = :d"
                        ),
                        {"d": business_date},
                    )
                ).tuples()
            }
            positions: dict[str, int] = {
                r[0]: r[1]
                for r in (
                    await session.execute(
                        text(
                            "SELECT stream, contiguous_upto FROM clearing.inbox_stream "
                            "WHERE consumer = :c"
                        ),
                        {"c": INBOX_CONSUMER},
                    )
                ).tuples()
            }
        done = len(
            [c for c in required if c in rolls and positions.get(book_stream(c), 0) >= rolls[c]]
        )
        return done, len(required)

    async def _completeness(self, business_date: date) -> None:
        while True:
            try:
                done, total = await self.complete_books(business_date)
            except (ProblemError, CustodyRefused) as exc:
                if isinstance(exc, CustodyRefused) and exc.status < 500:
                    raise
                log.info("custody unavailable; waiting", extra={"error": str(exc)})
                await asyncio.sleep(self.settings.eod_poll_seconds)
                continue
            await self._progress(business_date, done, total)
            if done == total:
                break
            await asyncio.sleep(self.settings.eod_poll_seconds)
        async with unit_of_work(self.runtime.session_factory) as session:
            await self._advance(session, business_date, "completeness")

    async def _net(self, business_date: date) -> None:
        """Net the day in SQL: per member cash and fees, per member and product units."""
        async with unit_of_work(self.runtime.session_factory) as session:
            params = {"d": business_date}
            await session.execute(text("SET LOCAL work_mem = '256MB'"))
            for table in ("settlement_units", "settlement_members"):  # a resumed phase
                await session.execute(
                    text(f"DELETE FROM clearing.{table} WHERE business_date = :d"), params
                )
            await session.execute(_NET_LEGS, params)
            await session.execute(_NET_MEMBERS, params)
            await session.execute(_NET_UNITS, params)
            unbalanced = (await session.execute(_UNBALANCED_UNITS, params)).scalars().all()
            if unbalanced:
                raise RuntimeError(f"net units do not sum to zero for {sorted(unbalanced)}")
            count, fee_total, _ = (await session.execute(_DAY_TOTALS, params)).one()
            await self._advance(
                session,
                business_date,
                "net",
                trade_count=int(count),
                fee_total_fen=int(fee_total),
                progress_done=0,
                progress_total=int(count),
            )

    async def _settle(self, business_date: date) -> None:
        async with unit_of_work(self.runtime.session_factory) as session:
            batch = await netted_batch(session, business_date)
        deadline = asyncio.get_running_loop().time() + self.settings.eod_settle_timeout_seconds
        while True:
            try:
                result = await self.custody.settle_netted(batch)
                break
            except CustodyRefused as exc:
                transient = exc.code in TRANSIENT
                if not transient or asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("custody not ready to settle; retrying", extra={"code": exc.code})
            except ProblemError as exc:  # custody unreachable: wait for it
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("custody unreachable; retrying", extra={"error": exc.detail})
            await asyncio.sleep(self.settings.eod_poll_seconds)
        crash_point("eod_settle_before_record")
        async with unit_of_work(self.runtime.session_factory) as session:
            await self._advance(
                session,
                business_date,
                "settle",
                batch_result=orjson.dumps(result).decode(),
                progress_done=batch["trade_count"],
                progress_total=batch["trade_count"],
            )
            await store.audit(
                session,
                "eod.settled",
                business_date,
                {"batch_id": batch["batch_id"], "entry_id": result.get("entry_id")},
            )

    async def _settlement(self, business_date: date) -> tuple[Settlement, dict[str, Any]]:
        """The day's cash settlement (the units stay in ``clearing.settlement_units``: the
        ``net`` phase checked that every product's units sum to zero)."""
        async with unit_of_work(self.runtime.session_factory) as session:
            row = await store.get_run(session, business_date)
            assert row is not None
            assert row.batch_result is not None
            result: dict[str, Any] = dict(row.batch_result)
            net, fees = await netting_rows(session, business_date)
        settlement = settlement_from(
            business_date, int(row.trade_count or 0), net, fees, {}, result, self.settings
        )
        return settlement, result

    async def _instructions(self, business_date: date) -> None:
        settlement, _ = await self._settlement(business_date)
        content = write_instruction_file(business_date, settlement.instructions)
        totals = instruction_totals(settlement.instructions)
        async with unit_of_work(self.runtime.session_factory) as session:
            await session.execute(
                text(
                    """
                    INSERT INTO clearing.instruction_files
                        (business_date, content, row_count, debit_fen, credit_fen, withdrawal_fen)
                    VALUES (:d, :c, :n, :debit, :credit, :w)
                    ON CONFLICT (business_date) DO NOTHING
                    """
                ),
                {
                    "d": business_date,
                    "c": content,
                    "n": len(settlement.instructions),
                    "debit": totals.debit_fen,
                    "credit": totals.credit_fen,
                    "w": settlement.withdrawal_total_fen,
                },
            )
            await self._advance(session, business_date, "instructions")

    async def _report(self, business_date: date) -> None:
        settlement, result = await self._settlement(business_date)
        report = settlement_report(settlement, result)
        async with unit_of_work(self.runtime.session_factory) as session:
            await self._advance(
                session, business_date, "report", report=orjson.dumps(report).decode()
            )
            await session.execute(
                text(
                    "UPDATE clearing.eod_runs SET status = 'settled', finished_at = now() "
                    "WHERE business_date = :d AND status = 'running'"
                ),
                {"d": business_date},
            )
            await store.audit(session, "eod.finished", business_date, report["totals"])
            await self.runtime.outbox.add(
                session,
                [Draft(SETTLEMENT_COMPLETED, SETTLEMENT_COMPLETED, dict(settled_message(report)))],
            )


#: Per (member, product): the day's purchases and sales aggregated separately (two hash
#: aggregates over the day's trades, then a full join), with the member's cash and fees.
_NET_LEGS = text(
    """
    CREATE TEMP TABLE day_legs ON COMMIT DROP AS
    SELECT coalesce(b.m, s.m) AS member_id, coalesce(b.i, s.i) AS instrument,
           (coalesce(b.q, 0) - coalesce(s.q, 0))::bigint AS q,
           (coalesce(s.a, 0) - coalesce(b.a, 0))::bigint AS net,
           (coalesce(b.f, 0) + coalesce(s.f, 0))::bigint AS fees,
           coalesce(b.n, 0) + coalesce(s.n, 0) AS n
    FROM (
        SELECT buyer_member_id AS m, instrument AS i, sum(quantity) AS q,
               sum(amount_fen) AS a, sum(buyer_fee_fen) AS f, count(*) AS n
        FROM clearing.trades WHERE business_date = :d GROUP BY 1, 2
    ) b
    FULL JOIN (
        SELECT seller_member_id AS m, instrument AS i, sum(quantity) AS q,
               sum(amount_fen) AS a, sum(seller_fee_fen) AS f, count(*) AS n
        FROM clearing.trades WHERE business_date = :d GROUP BY 1, 2
    ) s ON s.m = b.m AND s.i = b.i
    """
)
_NET_MEMBERS = text(
    """
    INSERT INTO clearing.settlement_members
        (business_date, member_id, net_cash_fen, fees_fen, trade_count)
    SELECT :d, member_id, sum(net), sum(fees), sum(n) FROM day_legs GROUP BY member_id
    """
)
_NET_UNITS = text(
    """
    INSERT INTO clearing.settlement_units (business_date, member_id, instrument, net_units)
    SELECT :d, member_id, instrument, q FROM day_legs
    """
)
_UNBALANCED_UNITS = text(
    "SELECT instrument FROM clearing.settlement_units WHERE business_date = :d "
    "GROUP BY instrument HAVING sum(net_units) <> 0"
)
_DAY_TOTALS = text(
    "SELECT count(*), coalesce(sum(buyer_fee_fen + seller_fee_fen), 0), "
    "coalesce(sum(amount_fen), 0) FROM clearing.trades WHERE business_date = :d"
)


def _digest_sql(row: str) -> str:
    """An order-independent digest of a set of rows (custody computes the same expression
    over its own obligations: services.custody.settlement.digest_sql)."""
    return f"coalesce(sum(('x' || substr(md5({row}), 1, 15))::bit(60)::bigint), 0)::text"


_TRADES_DIGEST = text(
    "SELECT "
    + _digest_sql(
        "concat_ws('|', trade_id, instrument, price_fen, quantity, buyer_member_id, "
        "seller_member_id, buyer_fee_fen, seller_fee_fen)"
    )
    + " FROM clearing.trades WHERE business_date = :d"
)
_UNITS_DIGEST = text(
    "SELECT "
    + _digest_sql("concat_ws('|', member_id, instrument, net_units)")
    + " FROM clearing.settlement_units WHERE business_date = :d"
)


async def netted_batch(session: AsyncSession, business_date: date) -> dict[str, Any]:
    """The settlement batch custody checks against its own obligations: the day's totals,
    per member cash and fees, and digests of the trade set and of the units."""
    params = {"d": business_date}
    count, fee_total, gross = (await session.execute(_DAY_TOTALS, params)).one()
    members = [
        {"member_id": m, "net_cash_fen": int(n), "fees_fen": int(f)}
        for m, n, f in await session.execute(
            text(
                "SELECT member_id, net_cash_fen, fees_fen FROM clearing.settlement_members "
                "WHERE business_date = :d ORDER BY member_id"
            ),
            params,
        )
    ]
    return {
        "batch_id": batch_id(business_date),
        "business_date": business_date.isoformat(),
        "trade_count": int(count),
        "gross_amount_fen": int(gross),
        "fee_total_fen": int(fee_total),
        "trades_digest": (await session.execute(_TRADES_DIGEST, params)).scalar_one(),
        "units_digest": (await session.execute(_UNITS_DIGEST, params)).scalar_one(),
        "members": members,
    }


async def netting_rows(
    session: AsyncSession, business_date: date
) -> tuple[dict[str, int], dict[str, int]]:
    """The ``net`` phase's rows: net cash and fees per member."""
    params = {"d": business_date}
    net: dict[str, int] = {}
    fees: dict[str, int] = {}
    for m, n, f in await session.execute(
        text(
            "SELECT member_id, net_cash_fen, fees_fen FROM clearing.settlement_members "
            "WHERE business_date = :d"
        ),
        params,
    ):
        net[m] = int(n)
        fees[m] = int(f)
    return net, fees


def settlement_from(
    business_date: date,
    trade_count: int,
    net: dict[str, int],
    fees: dict[str, int],
    units: dict[tuple[str, str], int],
    result: dict[str, Any],
    settings: ClearingSettings,
) -> Settlement:
    """The day's netting with the withdrawals custody posted, checked against custody's
    result member by member."""
    sub_accounts = {m["member_id"]: m["sub_account"] for m in result.get("members", [])}
    withdrawals = []
    for w in result.get("withdrawals", []):
        sub_accounts[w["member_id"]] = w["sub_account"]
        withdrawals.append(Withdrawal(w["withdrawal_id"], w["member_id"], parse_fen(w["amount"])))
    fee_account = (result.get("fee_account") or {}).get("sub_account") or settings.fee_sub_account
    settlement = settle_aggregates(
        business_date, trade_count, net, fees, units, withdrawals, sub_accounts, fee_account
    )
    theirs = {
        m["member_id"]: (
            parse_fen(m["net_cash"], allow_negative=True),
            parse_fen(m["fees"]),
        )
        for m in result.get("members", [])
    }
    for member in settlement.members:
        if member.net_cash_fen == 0 and member.fees_fen == 0 and member.member_id not in theirs:
            continue
        if theirs.get(member.member_id, (0, 0)) != (member.net_cash_fen, member.fees_fen):
            raise RuntimeError(
                f"custody settled member {member.member_id} differently from clearing's netting"
            )
    return settlement


def settled_message(report: dict[str, Any]) -> SettlementCompleted:
    """What the gateway needs for partners' ``settlement.completed`` callbacks: each
    member's cash result (units stay in the report: a busy day has ~500,000 such rows)."""
    return SettlementCompleted(
        business_date=report["business_date"],
        batch_id=str(report["batch_id"]),
        members=[
            SettledMember(
                member_id=m["member_id"],
                net_cash=m["net_cash"],
                fees=m["fees"],
                net_after_fees=m["net_after_fees"],
                withdrawals=m["withdrawals"],
            )
            for m in report["members"]
        ],
    )


def settlement_report(settlement: Settlement, result: dict[str, Any]) -> dict[str, Any]:
    """The stored report; the members' units are added when it is read, from
    ``clearing.settlement_units`` (see ``store.with_units``)."""
    totals = instruction_totals(settlement.instructions)
    gross = sum(
        i.amount_fen
        for i in settlement.instructions
        if i.kind is InstructionKind.TRADE_NET and i.signed_fen > 0
    )
    return {
        "business_date": settlement.business_date.isoformat(),
        "batch_id": result.get("batch_id"),
        "entry_id": result.get("entry_id"),
        "members": [
            {
                "member_id": m.member_id,
                "sub_account": m.sub_account,
                "net_cash": format_fen(m.net_cash_fen),
                "fees": format_fen(m.fees_fen),
                "net_after_fees": format_fen(m.net_after_fees_fen),
                "withdrawals": format_fen(m.withdrawals_fen),
            }
            for m in settlement.members
        ],
        "fee_account": result.get("fee_account"),
        "totals": {
            "trade_count": settlement.trade_count,
            "net_credit_total": format_fen(gross),
            "fee_total": format_fen(settlement.fee_total_fen),
            "withdrawal_total": format_fen(settlement.withdrawal_total_fen),
            "member_count": len(settlement.members),
            "instruction_rows": len(settlement.instructions),
            "instruction_debit": format_fen(totals.debit_fen),
            "instruction_credit": format_fen(totals.credit_fen),
        },
    }
