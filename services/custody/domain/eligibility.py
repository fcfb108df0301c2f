"""Who may place which order (投资者适当性): pure checks returning a public reject reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemberFacts:
    partner_id: str
    qualified: bool
    risk_tolerance: str  # C1..C5


@dataclass(frozen=True, slots=True)
class ProductFacts:
    state: str  # trading, halted, delisted
    transferable: bool
    risk_level: str  # R1..R5


def risk_number(level: str) -> int:
    """The n of R<n> or C<n>."""
    if len(level) != 2 or level[0] not in "RC" or level[1] not in "12345":
        raise ValueError(f"not a risk level: {level!r}")
    return int(level[1])


def order_reject_reason(
    side: str,
    partner_id: str,
    member: MemberFacts | None,
    product: ProductFacts | None,
) -> str | None:
    """The reason an order is refused before any balance is looked at, or None."""
    if member is None or member.partner_id != partner_id:
        return "UNKNOWN_MEMBER"
    if product is None:
        return "UNKNOWN_INSTRUMENT"
    if product.state != "trading":
        return "INSTRUMENT_NOT_TRADING"
    if not product.transferable:
        return "NOT_TRANSFERABLE"
    if side == "BUY":
        if not member.qualified:
            return "NOT_QUALIFIED"
        if risk_number(product.risk_level) > risk_number(member.risk_tolerance):
            return "UNSUITABLE_RISK_LEVEL"
    return None


def holder_cap_allows(
    is_holder_or_candidate: bool, holders_and_candidates: int, max_holders: int
) -> bool:
    """A buy may go on if the member already holds (or already has an open buy for) the
    product, or if one more possible holder still fits under the cap.

    Candidates are members with an open buy who do not hold yet: counting them makes the
    cap impossible to exceed however those buys fill.
    """
    return is_holder_or_candidate or holders_and_candidates < max_holders
