"""The custody schema as SQLAlchemy Core tables (the migrations own the DDL; these describe it
for queries and for readers). Amounts are integers: fen for cash, units for products."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(schema="custody")

business_day = Table(
    "business_day",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("business_date", Date, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("member_id", Text, primary_key=True),
    Column("partner_id", Text, nullable=False),
    Column("external_ref", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("qualified", Boolean, nullable=False),
    Column("risk_tolerance", Text, nullable=False),
    Column("sub_account", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("product_type", Text, nullable=False),
    Column("face_value_fen", BigInteger, nullable=False),
    Column("issue_size", BigInteger, nullable=False),
    Column("expected_yield", Text, nullable=False),
    Column("term_days", Integer, nullable=False),
    Column("maturity_date", Date, nullable=False),
    Column("risk_level", Text, nullable=False),
    Column("tick_fen", BigInteger, nullable=False),
    Column("lot_size", BigInteger, nullable=False),
    Column("min_order_qty", BigInteger, nullable=False),
    Column("min_order_value_fen", BigInteger, nullable=False),
    Column("price_band_pct", Text, nullable=False),
    Column("reference_price_fen", BigInteger, nullable=False),
    Column("band_low_fen", BigInteger, nullable=False),
    Column("band_high_fen", BigInteger, nullable=False),
    Column("max_holders", Integer, nullable=False),
    Column("transferable", Boolean, nullable=False),
    Column("disclosure", JSONB, nullable=False),
    Column("state", Text, nullable=False),
    Column("holder_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("owner_kind", Text, nullable=False),  # member, fee, bank, issuer, issuance
    Column("owner_id", Text, nullable=False),
    Column("asset", Text, nullable=False),  # CNY or a product code
    Column("settled", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("pending_in", BigInteger, nullable=False),
    Column("pending_out", BigInteger, nullable=False),
)

journal_head = Table(
    "journal_head",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", Text, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("entry_id", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)

postings = Table(
    "postings",
    metadata,
    Column("entry_seq", BigInteger, primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("account_id", BigInteger, nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("member_id", Text, nullable=False),
    Column("instrument", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("fees_charged", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("close_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

trades = Table(
    "trades",
    metadata,
    Column("trade_id", Text, primary_key=True),
    Column("instrument", Text, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("price_fen", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("buyer_member_id", Text, nullable=False),
    Column("seller_member_id", Text, nullable=False),
    Column("buyer_order_id", Text, nullable=False),
    Column("seller_order_id", Text, nullable=False),
    Column("buyer_fee_fen", BigInteger, nullable=False),
    Column("seller_fee_fen", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

deposits = Table(
    "deposits",
    metadata,
    Column("deposit_id", Text, primary_key=True),
    Column("bank_reference", Text, nullable=False, unique=True),
    Column("member_id", Text, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("entry_seq", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("withdrawal_id", Text, primary_key=True),
    Column("member_id", Text, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("batch_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

settlement_batches = Table(
    "settlement_batches",
    metadata,
    Column("batch_id", Text, primary_key=True),
    Column("business_date", Date, nullable=False, unique=True),
    Column("request_hash", Text, nullable=False),
    Column("entry_seq", BigInteger),
    Column("result", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
