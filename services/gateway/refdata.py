"""Reference data the gateway validates orders against: instruments and members.

Instruments are cached in ``gateway.instruments``, loaded from custody at start and kept
fresh by ``instrument.updated`` and the books' ``BookStateChanged`` events; a product
the cache does not know yet is fetched from custody on first use. Members are cached
the first time they are seen (their partner, qualification and risk tolerance).
"""

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway import repositories as repo
from services.gateway.clients import Downstream, DownstreamProblem
from shared.errors import ProblemError
from shared.money import MoneyError, parse_fen

log = logging.getLogger(__name__)

_CODE = re.compile(r"^[A-Z0-9]{4,16}$")
_MEMBER_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class InstrumentRules:
    code: str
    state: str
    tick_fen: int
    lot: int
    min_qty: int
    min_value_fen: int
    reference_fen: int
    band_num: int
    band_den: int
    issue_size: int
    risk_level: int
    transferable: bool

    @classmethod
    def from_data(cls, data: dict[str, Any], state: str) -> "InstrumentRules":
        try:
            band = Decimal(str(data["price_band_pct"]))
            if not band.is_finite() or band < 0:
                raise ValueError("bad band")
            num, den = band.as_integer_ratio()
            return cls(
                code=str(data["code"]),
                state=state,
                tick_fen=parse_fen(str(data["tick_size"])),
                lot=int(data["lot_size"]),
                min_qty=int(data["min_order_qty"]),
                min_value_fen=parse_fen(str(data["min_order_value"])),
                reference_fen=parse_fen(str(data["reference_price"])),
                band_num=num,
                band_den=den,
                issue_size=int(data["issue_size"]),
                risk_level=int(str(data["risk_level"]).lstrip("Rr")),
                transferable=bool(data.get("transferable", True)),
            )
        except (KeyError, ValueError, TypeError, InvalidOperation, MoneyError) as exc:
            log.error("unusable instrument in the cache", extra={"data": data, "error": repr(exc)})
            raise ProblemError(
                503, "SERVICE_UNAVAILABLE", "reference data for this product is unusable"
            ) from exc

    def in_band(self, price_fen: int) -> bool:
        """reference x (1 - band/100) <= p <= reference x (1 + band/100), in exact integers."""
        scaled = price_fen * 100 * self.band_den
        low = self.reference_fen * (100 * self.band_den - self.band_num)
        high = self.reference_fen * (100 * self.band_den + self.band_num)
        return low <= scaled <= high


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    partner_id: str
    qualified: bool
    risk_tolerance: int


def _tolerance(value: str) -> int:
    return int(value.lstrip("Cc"))


class ReferenceData:
    """Reads through two levels: a short-lived in-process copy (``ttl`` seconds, so a busy
    gateway does not ask the database for the same product on every order) over the
    ``gateway.instruments`` and ``gateway.members`` tables, over custody."""

    MAX_MEMBERS = 100_000

    def __init__(self, downstream: Downstream, *, ttl: float = 0.5) -> None:
        self._downstream = downstream
        self._ttl = ttl
        self._instruments: dict[str, tuple[float, InstrumentRules]] = {}
        self._members: dict[str, MemberInfo] = {}
        self._business_date: tuple[float, date | None] | None = None
        self._refreshing = asyncio.Lock()

    def forget_instrument(self, code: str) -> None:
        """Drop a product's in-process copy; "" drops the business date's."""
        if code:
            self._instruments.pop(code, None)
        else:
            self._business_date = None

    async def business_date(self, session: AsyncSession) -> date | None:
        cached = self._business_date
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # One refresh at a time: the requests that found the copy stale together wait for
        # it rather than each reading the database (and opening a connection) at once.
        async with self._refreshing:
            cached = self._business_date
            now = time.monotonic()
            if cached is not None and cached[0] > now:
                return cached[1]
            value = await repo.get_business_date(session)
            self._business_date = (now + self._ttl, value)
            return value

    async def instrument(self, session: AsyncSession, code: str) -> InstrumentRules | None:
        if not _CODE.match(code):
            return None
        cached = self._instruments.get(code)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._refreshing:
            cached = self._instruments.get(code)
            now = time.monotonic()
            if cached is not None and cached[0] > now:
                return cached[1]
            rules = await self._instrument(session, code)
            if rules is not None:
                self._instruments[code] = (now + self._ttl, rules)
            return rules

    async def _instrument(self, session: AsyncSession, code: str) -> InstrumentRules | None:
        row = await repo.get_instrument(session, code)
        if row is not None:
            try:
                return InstrumentRules.from_data(dict(row.data), row.state)
            except ProblemError:
                log.warning("incomplete cached product; asking custody", extra={"code": code})
        try:
            data = await self._downstream.custody.json("GET", f"/internal/instruments/{code}")
        except DownstreamProblem as problem:
            if problem.status == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("code") != code:
            return None
        await repo.upsert_instrument(session, data)
        return InstrumentRules.from_data(data, str(data.get("state") or "trading"))

    async def member(
        self, session: AsyncSession, partner_id: str, member_id: str
    ) -> MemberInfo | None:
        """The partner's member, or None (unknown, or another partner's: never say which)."""
        if not _MEMBER_ID.match(member_id):
            return None
        known = self._members.get(member_id)
        if known is not None:
            return known if known.partner_id == partner_id else None
        found = await self._member(session, partner_id, member_id)
        if found is not None:
            if len(self._members) >= self.MAX_MEMBERS:
                self._members.clear()
            self._members[member_id] = found
        return found

    async def _member(
        self, session: AsyncSession, partner_id: str, member_id: str
    ) -> MemberInfo | None:
        row = await repo.get_member(session, member_id)
        if row is None:
            try:
                data = await self._downstream.custody.json(
                    "GET", f"/internal/members/{member_id}", params={"partner_id": partner_id}
                )
            except DownstreamProblem as problem:
                if problem.status == 404:
                    return None
                raise
            if not isinstance(data, dict) or data.get("member_id") != member_id:
                return None
            owner = str(data.get("partner_id") or partner_id)
            await self.remember_member(session, data, owner)
            if owner != partner_id:
                return None
            return MemberInfo(
                member_id,
                owner,
                bool(data.get("qualified")),
                _tolerance(str(data["risk_tolerance"])),
            )
        if row.partner_id != partner_id:
            return None
        return MemberInfo(member_id, row.partner_id, row.qualified, _tolerance(row.risk_tolerance))

    async def remember_member(
        self, session: AsyncSession, data: dict[str, Any], partner_id: str
    ) -> None:
        await repo.upsert_member(
            session,
            member_id=str(data["member_id"]),
            partner_id=partner_id,
            qualified=bool(data.get("qualified")),
            risk_tolerance=str(data.get("risk_tolerance") or "C1"),
        )

    async def owned_member(
        self, session: AsyncSession, partner_id: str, member_id: str
    ) -> MemberInfo:
        member = await self.member(session, partner_id, member_id)
        if member is None:
            raise ProblemError(404, "UNKNOWN_MEMBER", f"no member {member_id}")
        return member

    async def load_instruments(self, session: AsyncSession) -> int:
        """Fill the cache from custody's list of every product."""
        count = 0
        cursor: str | None = None
        while True:
            page = await self._downstream.custody.json(
                "GET", "/internal/instruments", params={"limit": 1000, "cursor": cursor}
            )
            items = page.get("items", []) if isinstance(page, dict) else []
            for item in items:
                if isinstance(item, dict) and "code" in item:
                    await repo.upsert_instrument(session, item)
                    count += 1
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor or not items:
                return count
