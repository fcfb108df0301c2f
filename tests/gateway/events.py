"""Publishing what matching and custody would publish, as real envelopes on the broker."""

import itertools
from collections import defaultdict
from typing import Any

from shared.contracts import (
    BOOK_EVENTS,
    BUSINESS_DATE_ROLLED,
    INSTRUMENT_UPDATED,
    ORDER_REJECTED,
    SETTLEMENT_COMPLETED,
    book_routing_key,
    book_stream,
)
from shared.ids import uuid7
from shared.messaging.broker import Broker, OutgoingMessage
from shared.messaging.envelope import Envelope


class Producer:
    """A stand-in for matching (book events, gap-free per book) and custody."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._envelope_seq: defaultdict[str, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )
        self._book_seq: defaultdict[str, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )

    async def _send(
        self, routing_key: str, type_: str, stream: str, payload: dict[str, Any]
    ) -> None:
        envelope = Envelope(
            message_id=str(uuid7()),
            type=type_,
            producer=stream.split(":")[0],
            stream=stream,
            sequence=next(self._envelope_seq[stream]),
            payload=payload,
        )
        await self.broker.publish([OutgoingMessage.from_envelope(routing_key, envelope)])

    async def book(self, instrument: str, *events: dict[str, Any]) -> None:
        numbered = [{**e, "seq": next(self._book_seq[instrument])} for e in events]
        await self._send(
            book_routing_key(instrument),
            BOOK_EVENTS,
            book_stream(instrument),
            {"instrument": instrument, "events": numbered},
        )

    async def rejected(self, order: dict[str, Any], reason: str) -> None:
        await self._send(
            ORDER_REJECTED,
            ORDER_REJECTED,
            "custody:test",
            {
                "order_id": order["order_id"],
                "member_id": order["member_id"],
                "instrument": order["instrument"],
                "reason": reason,
            },
        )

    async def instrument_updated(self, instrument: dict[str, Any]) -> None:
        await self._send(INSTRUMENT_UPDATED, INSTRUMENT_UPDATED, "custody:instruments", instrument)

    async def day_rolled(self, previous: str, current: str) -> None:
        await self._send(
            BUSINESS_DATE_ROLLED,
            BUSINESS_DATE_ROLLED,
            "clearing:test",
            {"previous_date": previous, "business_date": current},
        )

    async def settlement_completed(self, business_date: str, members: list[dict[str, Any]]) -> None:
        await self._send(
            SETTLEMENT_COMPLETED,
            SETTLEMENT_COMPLETED,
            "clearing:test",
            {"business_date": business_date, "batch_id": f"B{business_date}", "members": members},
        )


def accepted(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "OrderAccepted",
        "order_id": order["order_id"],
        "member_id": order["member_id"],
        "side": order["side"].upper(),
        "price_fen": int(order["price"].replace(".", "")),
        "quantity": order["quantity"],
        "tif": order["time_in_force"],
    }


def rested(order: dict[str, Any], remaining: int | None = None) -> dict[str, Any]:
    return {
        "type": "OrderRested",
        "order_id": order["order_id"],
        "side": order["side"].upper(),
        "price_fen": int(order["price"].replace(".", "")),
        "remaining_quantity": order["quantity"] if remaining is None else remaining,
    }


def trade(
    maker: dict[str, Any], taker: dict[str, Any], quantity: int, business_date: str
) -> dict[str, Any]:
    return {
        "type": "Trade",
        "trade_id": f"t_{uuid7().hex}",
        "maker_order_id": maker["order_id"],
        "taker_order_id": taker["order_id"],
        "maker_member_id": maker["member_id"],
        "taker_member_id": taker["member_id"],
        "taker_side": taker["side"].upper(),
        "price_fen": int(maker["price"].replace(".", "")),
        "quantity": quantity,
        "business_date": business_date,
    }


def filled(
    order: dict[str, Any], filled_quantity: int, quantity: int | None = None
) -> dict[str, Any]:
    total = order["quantity"] if quantity is None else quantity
    remaining = total - filled_quantity
    return {
        "type": "OrderFilled",
        "order_id": order["order_id"],
        "filled_quantity": filled_quantity,
        "remaining_quantity": remaining,
        "status": "FILLED" if remaining == 0 else "PARTIALLY_FILLED",
    }


def cancelled(order: dict[str, Any], reason: str, filled_quantity: int = 0) -> dict[str, Any]:
    return {
        "type": "OrderCancelled",
        "order_id": order["order_id"],
        "reason": reason,
        "filled_quantity": filled_quantity,
        "remaining_quantity": order["quantity"] - filled_quantity,
    }
