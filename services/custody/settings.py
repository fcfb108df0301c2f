"""Custody's settings (environment prefix ``EXCHANGE_``)."""

from pydantic import Field

from shared.config import CommonSettings


class CustodySettings(CommonSettings):
    #: The exchange's fee income sub-account at the custody bank.
    fee_sub_account: str = "SUBFEE0001"
    #: Member sub-account numbers are this prefix and a zero-padded serial.
    sub_account_prefix: str = "SUB"
    sub_account_digits: int = Field(default=7, ge=4, le=16)
