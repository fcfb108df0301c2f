"""Clearing's settings (environment prefix ``EXCHANGE_``)."""

from pydantic import Field

from shared.config import CommonSettings


class ClearingSettings(CommonSettings):
    #: Book events in flight: trade capture applies what has arrived in one transaction.
    prefetch: int = Field(default=2_000, ge=1, le=10_000)
    #: Capture many trades per transaction, set-based (False: one message at a time, the
    #: previous behaviour, kept as the benchmark's baseline).
    capture_batch: bool = True
    #: Trade capture waits this long after a batch's first book events before applying it:
    #: it is off the orders' path (settlement waits for it at the end of the day), and
    #: fewer, larger transactions leave the CPU to the consumers an order waits for.
    capture_linger_seconds: float = Field(default=0.2, ge=0, le=5)
    #: The exchange's fee income sub-account at the custody bank (custody uses the same).
    fee_sub_account: str = "SUBFEE0001"
    #: The bank's master account number.
    master_account: str = "MASTER0001"
    #: How often the end-of-day run polls while it waits (completeness, custody catching up).
    eod_poll_seconds: float = Field(default=0.2, gt=0)
    #: How long settlement retries custody's transient refusals (date still open, custody
    #: not yet caught up with the day's trades) before the run is marked failed.
    eod_settle_timeout_seconds: float = Field(default=300.0, gt=0)
    #: Timeout of one HTTP call to custody.
    custody_timeout_seconds: float = Field(default=120.0, gt=0)
