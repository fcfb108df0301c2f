"""The message envelope every service publishes and consumes."""

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from shared.clock import utc_now

#: An AMQP message carrying several envelopes: a JSON array of them, in order.
BUNDLE_CONTENT_TYPE = "application/vnd.exchange.bundle+json"
#: The content encoding of a compressed body: zlib's format ("deflate" as HTTP names it).
#: Bundles are sent compressed: their envelopes repeat the same keys, so they shrink 4-7
#: times, and every byte sent is written to each quorum queue's log it is routed to.
DEFLATE = "deflate"
#: A compressed body is refused past this size once inflated (our bundles are ~1 kB an
#: envelope, at most a few hundred envelopes).
MAX_INFLATED_BYTES = 64 * 1024 * 1024


class AmqpBody(Protocol):
    """What decoding needs of an AMQP message, incoming or outgoing."""

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def content_encoding(self) -> str | None: ...


class EnvelopeError(ValueError):
    """A message body that is not a valid envelope; it can never succeed, so it is dead-lettered."""


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: str
    type: str
    producer: str
    stream: str
    sequence: int
    payload: dict[str, Any]
    correlation_id: str | None = None
    occurred_at: datetime = field(default_factory=utc_now)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "message_id": self.message_id,
                "type": self.type,
                "producer": self.producer,
                "stream": self.stream,
                "sequence": self.sequence,
                "correlation_id": self.correlation_id,
                "occurred_at": self.occurred_at,
                "payload": self.payload,
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> "Envelope":
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"body is not JSON: {exc}") from exc
        return cls.from_raw(raw)

    @classmethod
    def decode_message(cls, message: AmqpBody) -> list["Envelope"]:
        """The envelopes of one AMQP message, by its content type and encoding."""
        return cls.decode_all(message.body, message.content_type, message.content_encoding)

    @classmethod
    def decode_all(
        cls, body: bytes, content_type: str | None, content_encoding: str | None
    ) -> list["Envelope"]:
        """The envelopes of one AMQP message: one, or a bundle of several."""
        body = inflate(body, content_encoding)
        if content_type != BUNDLE_CONTENT_TYPE:
            return [cls.decode(body)]
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"bundle is not JSON: {exc}") from exc
        if not isinstance(raw, list) or not raw:
            raise EnvelopeError("a bundle must be a non-empty JSON array")
        return [cls.from_raw(item) for item in raw]

    @classmethod
    def from_raw(cls, raw: object) -> "Envelope":
        if not isinstance(raw, dict):
            raise EnvelopeError("envelope must be a JSON object")
        try:
            message_id = raw["message_id"]
            sequence = raw["sequence"]
            payload = raw["payload"]
            occurred_at = datetime.fromisoformat(raw["occurred_at"])
            envelope = cls(
                message_id=str(message_id),
                type=str(raw["type"]),
                producer=str(raw["producer"]),
                stream=str(raw["stream"]),
                sequence=sequence,
                payload=payload,
                correlation_id=raw.get("correlation_id"),
                occurred_at=occurred_at,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"invalid envelope: {exc!r}") from exc
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
            raise EnvelopeError(f"sequence must be a positive integer, got {sequence!r}")
        if not isinstance(payload, dict):
            raise EnvelopeError("payload must be a JSON object")
        return envelope


def deflate(body: bytes) -> bytes:
    """A body compressed for ``content_encoding=DEFLATE`` (level 1: most of the gain for
    the least CPU on this JSON)."""
    return zlib.compress(body, 1)


def inflate(body: bytes, content_encoding: str | None) -> bytes:
    """The body as sent, before its content encoding (none, or ``DEFLATE``)."""
    if not content_encoding:
        return body
    if content_encoding != DEFLATE:
        raise EnvelopeError(f"unknown content encoding {content_encoding!r}")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise EnvelopeError(f"body is not valid deflate data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise EnvelopeError(f"body inflates past {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise EnvelopeError("deflate data is truncated")
    return raw
