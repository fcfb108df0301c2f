from tests.gateway.conftest import Stack


async def test_gateway_is_ready_and_documents_every_endpoint(stack: Stack) -> None:
    ready = await stack.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    spec = (await stack.http.get("/openapi.json")).json()
    assert "/v1/orders" in spec["paths"]
    partner = await stack.new_partner()
    member = await stack.new_member(partner)
    got = await partner.get(f"/v1/members/{member}")
    assert got.status_code == 200, got.text


async def test_the_staff_console_page_is_served(stack: Stack) -> None:
    page = await stack.http.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/v1/admin/eod" in page.text
