"""Request bodies of custody's internal routes."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RiskTolerance = Literal["C1", "C2", "C3", "C4", "C5"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberCreate(_Body):
    partner_id: str = Field(min_length=1, max_length=64)
    external_ref: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["individual", "institution"]
    qualified: bool
    risk_tolerance: RiskTolerance


class InstrumentCreate(_Body):
    code: str
    name: str = Field(min_length=1, max_length=200)
    issuer: str = Field(min_length=1, max_length=200)
    product_type: str
    face_value: str
    issue_size: int
    expected_yield: str
    term_days: int
    maturity_date: date
    risk_level: str
    tick_size: str
    lot_size: int
    min_order_qty: int
    min_order_value: str = "0.00"
    price_band_pct: str
    reference_price: str
    max_holders: int = 200
    transferable: bool = True
    disclosure: dict[str, Any] = Field(default_factory=dict)


class Allocation(_Body):
    member_id: str
    quantity: int


class AllocationRequest(_Body):
    allocations: list[Allocation] = Field(min_length=1, max_length=10_000)


class DepositCreate(_Body):
    member_id: str
    amount: str
    bank_reference: str = Field(min_length=1, max_length=128)


class WithdrawalCreate(_Body):
    amount: str
    #: Optional id chosen by the caller so that a retried request cannot withdraw twice.
    withdrawal_id: str | None = Field(default=None, min_length=3, max_length=64)


class BatchTrade(_Body):
    trade_id: str
    instrument: str
    price_fen: int
    quantity: int
    buyer_member_id: str
    seller_member_id: str
    buyer_fee_fen: int
    seller_fee_fen: int


class NettedMember(_Body):
    member_id: str = Field(min_length=1, max_length=64)
    #: Sales − purchases before fees (signed), and the member's fees.
    net_cash_fen: int
    fees_fen: int = Field(ge=0)


class NettedBatchRequest(_Body):
    """A day's settlement as clearing netted it: custody checks it against the same
    aggregates of its own obligations (see services.custody.settlement)."""

    batch_id: str = Field(min_length=1, max_length=128)
    business_date: date
    trade_count: int = Field(ge=0)
    gross_amount_fen: int = Field(ge=0)
    fee_total_fen: int = Field(ge=0)
    #: Order-independent digests (decimal text) of the trade set and of the per member
    #: and product net units.
    trades_digest: str = Field(max_length=64)
    units_digest: str = Field(max_length=64)
    members: list[NettedMember]
    withdrawal_ids: list[str] | None = None


class SettlementBatchRequest(_Body):
    batch_id: str = Field(min_length=1, max_length=128)
    business_date: date
    trades: list[BatchTrade]
    #: The withdrawals the caller expects to be posted; omitted means "every pending
    #: withdrawal dated on or before business_date" (and then nothing is checked).
    withdrawal_ids: list[str] | None = None
