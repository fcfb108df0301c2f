"""Bundles on the wire: runs of messages packed, compressed, and read back as they were sent."""

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messaging import envelope as envelope_module
from shared.messaging.broker import OutgoingMessage, bundle
from shared.messaging.envelope import (
    BUNDLE_CONTENT_TYPE,
    DEFLATE,
    Envelope,
    EnvelopeError,
)

KEYS = ["book.A", "book.B", "order.submit"]

payloads = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.text(max_size=40),
        st.booleans(),
        st.none(),
    ),
    max_size=6,
)


def message(routing_key: str, sequence: int, payload: dict[str, object]) -> OutgoingMessage:
    envelope = Envelope(
        message_id=f"m{sequence}",
        type="test.event",
        producer="test",
        stream="test",
        sequence=sequence,
        payload=payload,
    )
    return OutgoingMessage.from_envelope(routing_key, envelope)


def unpacked(sent: list[OutgoingMessage]) -> list[tuple[str, Envelope]]:
    return [(m.routing_key, envelope) for m in sent for envelope in Envelope.decode_message(m)]


@given(
    st.lists(st.tuples(st.sampled_from(KEYS), payloads), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=8),
)
def test_bundles_read_back_as_the_messages_in_order(
    drafts: list[tuple[str, dict[str, object]]], max_size: int
) -> None:
    messages = [message(key, n, payload) for n, (key, payload) in enumerate(drafts, start=1)]
    sent = bundle(messages, max_size)
    expected = [(m.routing_key, Envelope.decode_message(m)[0]) for m in messages]
    assert unpacked(sent) == expected
    for m in sent:
        if m.content_type == BUNDLE_CONTENT_TYPE:
            assert m.content_encoding == DEFLATE
        else:
            assert m.content_encoding is None  # a lone message goes as it is


def test_a_bundle_is_smaller_on_the_wire_than_its_messages() -> None:
    messages = [
        message("book.A", n, {"order_id": f"o_{n:026d}", "price_fen": 10_000 + n, "quantity": 1})
        for n in range(1, 21)
    ]
    [packed] = bundle(messages, 100)
    assert len(packed.body) * 3 < sum(len(m.body) for m in messages)


def test_an_unknown_content_encoding_is_not_an_envelope() -> None:
    body = message("book.A", 1, {}).body
    with pytest.raises(EnvelopeError, match="content encoding"):
        Envelope.decode_all(body, "application/json", "gzip")


def test_corrupt_or_truncated_deflate_data_is_not_an_envelope() -> None:
    [packed] = bundle([message("book.A", n, {"n": n}) for n in (1, 2)], 10)
    with pytest.raises(EnvelopeError, match="deflate"):
        Envelope.decode_all(b"not deflate at all", BUNDLE_CONTENT_TYPE, DEFLATE)
    with pytest.raises(EnvelopeError, match="truncated"):
        Envelope.decode_all(packed.body[:-6], BUNDLE_CONTENT_TYPE, DEFLATE)


def test_a_body_inflating_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope_module, "MAX_INFLATED_BYTES", 1_000)
    bomb = zlib.compress(b"[" + b" " * 10_000 + b"]")
    with pytest.raises(EnvelopeError, match="inflates past"):
        Envelope.decode_all(bomb, BUNDLE_CONTENT_TYPE, DEFLATE)
