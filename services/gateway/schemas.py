"""Request and response bodies of the public API (docs/spec/api.md), with examples."""

from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from shared.money import MAX_UNITS, Money

Side = Literal["buy", "sell"]
TimeInForce = Literal["GTC", "DAY", "IOC", "FOK"]
OrderStatus = Literal[
    "pending_new", "rejected", "open", "partially_filled", "filled", "cancelled", "expired"
]
StaffRole = Literal["operator", "auditor", "admin"]
WebhookEvent = Literal[
    "order.updated", "trade.executed", "settlement.completed", "withdrawal.updated"
]

CODE_PATTERN = r"^[A-Z0-9]{4,16}$"
Quantity = StrictInt


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Body(BaseModel):
    """A request body: unknown fields are ignored; NUL characters are refused anywhere."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    code: str = Field(examples=["PRICE_OFF_TICK"])
    detail: str


# --- admin ----------------------------------------------------------------------------


class PartnerCreate(Body):
    name: str = Field(min_length=1, max_length=200, examples=["Acme Wealth"])
    rate_limit_per_second: int | None = Field(default=None, ge=1, le=1_000_000)
    rate_limit_burst: int | None = Field(default=None, ge=1, le=1_000_000)


class PartnerCreated(BaseModel):
    partner_id: str = Field(examples=["p_01JDZ3Q4W5X6Y7Z8A9B0C1D2E3"])
    name: str
    api_key: str = Field(examples=["pk_3f9c2a7b8d1e4f60a5b6c7d8"])
    api_secret: str = Field(description="Shown once.", examples=["sk_Zt4Q..."])
    rate_limit_per_second: int
    rate_limit_burst: int


class StaffTokenCreate(Body):
    role: StaffRole = Field(examples=["operator"])
    name: str = Field(min_length=1, max_length=200, examples=["clearing desk"])


class StaffTokenCreated(BaseModel):
    token: str = Field(description="Shown once.", examples=["st_6kP..."])
    role: StaffRole
    token_id: str
    name: str


class AuditEntry(BaseModel):
    id: int
    occurred_at: str
    actor: str
    actor_name: str
    role: str
    method: str
    path: str
    status: int
    request: Any | None
    correlation_id: str | None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


# --- instruments ----------------------------------------------------------------------


class InstrumentCreate(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "code": "ZJ2026A01",
                    "name": "Zhejiang receivables income right 2026-A01",
                    "issuer": "Hangzhou Example Factoring Co.",
                    "product_type": "income_right_transfer",
                    "face_value": "100.00",
                    "issue_size": 100000,
                    "expected_yield": "0.065",
                    "term_days": 365,
                    "maturity_date": "2027-11-20",
                    "risk_level": "R2",
                    "tick_size": "0.01",
                    "lot_size": 1,
                    "min_order_qty": 1,
                    "min_order_value": "100.00",
                    "price_band_pct": "10",
                    "reference_price": "100.00",
                    "max_holders": 200,
                    "transferable": True,
                    "disclosure": {"credit_enhancement": "guarantee", "underlying_assets": "..."},
                }
            ]
        },
    )

    code: str = Field(pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    issuer: str = Field(min_length=1, max_length=200)
    product_type: Literal[
        "income_right_transfer", "directed_financing", "direct_financing_instrument", "other"
    ]
    face_value: Money
    issue_size: Quantity = Field(ge=1, le=MAX_UNITS)
    expected_yield: str = Field(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]{1,6})?$")
    term_days: StrictInt = Field(ge=1, le=36500)
    maturity_date: date
    risk_level: Literal["R1", "R2", "R3", "R4", "R5"]
    tick_size: Money
    lot_size: Quantity = Field(ge=1, le=MAX_UNITS)
    min_order_qty: Quantity = Field(ge=1, le=MAX_UNITS)
    min_order_value: Money
    price_band_pct: str = Field(pattern=r"^(0|[1-9][0-9]?)(\.[0-9]{1,4})?$|^100$")
    reference_price: Money
    max_holders: StrictInt = Field(default=200, ge=1, le=1_000_000)
    transferable: StrictBool = True
    disclosure: dict[str, str] = Field(default_factory=dict)


class Instrument(BaseModel):
    code: str
    name: str
    issuer: str
    product_type: str
    face_value: str
    issue_size: int
    expected_yield: str
    term_days: int
    maturity_date: str
    risk_level: str
    tick_size: str
    lot_size: int
    min_order_qty: int
    min_order_value: str
    price_band_pct: str
    reference_price: str
    max_holders: int
    transferable: bool
    disclosure: dict[str, Any]
    state: Literal["trading", "halted", "delisted"]
    holder_count: int


class InstrumentPage(BaseModel):
    items: list[Instrument]
    next_cursor: str | None


class Allocation(Body):
    member_id: str = Field(min_length=1, max_length=64)
    quantity: Quantity = Field(ge=1, le=MAX_UNITS)


class AllocationsCreate(Body):
    allocations: list[Allocation] = Field(min_length=1, max_length=1000)


# --- members --------------------------------------------------------------------------


class MemberCreate(Body):
    external_ref: str = Field(min_length=1, max_length=128, examples=["acme-investor-0001"])
    name: str = Field(min_length=1, max_length=200, examples=["Li Lei"])
    kind: Literal["individual", "institution"]
    qualified: StrictBool
    risk_tolerance: Literal["C1", "C2", "C3", "C4", "C5"]


class Member(BaseModel):
    member_id: str
    sub_account: str
    external_ref: str
    name: str
    kind: str
    qualified: bool
    risk_tolerance: str
    created_at: str | None = None


class Balance(BaseModel):
    settled: str
    held: str
    pending_in: str
    pending_out: str
    available: str


class Holding(BaseModel):
    instrument: str
    settled: int
    held: int
    pending_in: int
    pending_out: int
    available: int


class Balances(BaseModel):
    member_id: str
    cash: Balance
    holdings: list[Holding]


class LedgerEntry(BaseModel):
    entry_id: str
    asset: str
    amount: str | int
    kind: str
    reference: str
    business_date: str
    created_at: str


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: str | None


class WithdrawalCreate(Body):
    amount: Money = Field(examples=["300.00"])


class Withdrawal(BaseModel):
    withdrawal_id: str
    member_id: str
    amount: str
    status: Literal["pending", "sent", "completed", "failed"]
    business_date: str
    created_at: str


class WithdrawalPage(BaseModel):
    items: list[Withdrawal]
    next_cursor: str | None


class GenericPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


# --- orders ---------------------------------------------------------------------------


class OrderCreate(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "client_order_id": "acme-20261120-000123",
                    "member_id": "m_01JDZ3Q4W5X6Y7Z8A9B0C1D2E3",
                    "instrument": "ZJ2026A01",
                    "side": "buy",
                    "price": "100.50",
                    "quantity": 10,
                    "time_in_force": "GTC",
                }
            ]
        },
    )

    client_order_id: str = Field(min_length=1, max_length=64)
    member_id: str = Field(min_length=1, max_length=64)
    instrument: str = Field(min_length=1, max_length=16)
    side: Side
    price: Money
    quantity: Quantity = Field(ge=1, le=MAX_UNITS)
    time_in_force: TimeInForce = "GTC"


class OrderBatch(Body):
    orders: list[OrderCreate] = Field(min_length=1, max_length=100)


class Order(BaseModel):
    order_id: str
    client_order_id: str
    member_id: str
    instrument: str
    side: Side
    price: str
    quantity: int
    filled_quantity: int
    remaining_quantity: int
    average_price: str | None = Field(examples=["100.5000"])
    time_in_force: TimeInForce
    status: OrderStatus
    reject_reason: str | None
    cancel_reason: str | None
    business_date: str | None
    created_at: str
    updated_at: str


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None


class BatchResult(BaseModel):
    results: list[Order | Problem]


class OrderAmend(Body):
    quantity: Quantity = Field(ge=1, le=MAX_UNITS)


class Trade(BaseModel):
    trade_id: str
    order_id: str
    member_id: str
    instrument: str
    side: Side
    price: str
    quantity: int
    amount: str
    fee: str
    liquidity: Literal["maker", "taker"]
    business_date: str
    executed_at: str
    settlement_status: Literal["pending", "settled"]


class TradePage(BaseModel):
    items: list[Trade]
    next_cursor: str | None


# --- market data ----------------------------------------------------------------------


class Depth(BaseModel):
    instrument: str
    sequence: int
    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]


class MarketTrade(BaseModel):
    price: str
    quantity: int
    executed_at: str
    sequence: int


class MarketTrades(BaseModel):
    items: list[MarketTrade]


class Ticker(BaseModel):
    instrument: str | None = None
    last: str | None
    open: str | None
    high: str | None
    low: str | None
    volume: int
    turnover: str
    reference_price: str | None
    best_bid: str | None
    best_ask: str | None


# --- webhooks -------------------------------------------------------------------------


class WebhookCreate(Body):
    url: str = Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://[!-~]+$",
        examples=["https://partner.example/cb"],
    )
    events: list[WebhookEvent] = Field(min_length=1, max_length=4)

    @field_validator("url")
    @classmethod
    def _parsable(cls, url: str) -> str:
        """The pattern lets through URLs the parser refuses (a '[' in the host): refuse them
        here, as a validation error, rather than fail later."""
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a callback URL needs an http(s) scheme and a host")
        return url


class Webhook(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    created_at: str


class WebhookPage(BaseModel):
    items: list[Webhook]
    next_cursor: str | None = None


# --- clearing -------------------------------------------------------------------------


class DepositCreate(Body):
    member_id: str = Field(min_length=1, max_length=64)
    amount: Money
    bank_reference: str = Field(min_length=1, max_length=128, examples=["BK20261120-778"])


class EodCreate(Body):
    business_date: date


class BusinessDate(BaseModel):
    business_date: str
    status: str


class EodRun(BaseModel):
    business_date: str
    status: str
    phase: str | None = None
    progress: dict[str, int] | None = None
    trade_count: int | None = None
    fee_total: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
