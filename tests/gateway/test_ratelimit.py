"""Per-API-key token buckets: 429 RATE_LIMITED with Retry-After and RateLimit headers."""

from tests.gateway.conftest import Stack


async def test_over_the_limit_is_429_with_retry_after_and_only_for_that_key(stack: Stack) -> None:
    slow = await stack.new_partner(rate_limit_per_second=1, rate_limit_burst=3)
    other = await stack.new_partner()
    answers = [await slow.get("/v1/orders") for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert answers[2].headers["RateLimit-Remaining"] == "0"
    limited = answers[3]
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    assert (await other.get("/v1/orders")).status_code == 200
    default = (await other.get("/v1/orders")).headers
    assert default["RateLimit-Limit"] == str(stack.settings.rate_limit_burst)
