"""The edge middleware's view of the client address: X-Forwarded-For is believed only from
TRUSTED_PROXIES, read right to left past them."""

from __future__ import annotations

from typing import Any

import pytest

from azora_payments.api.middleware import EdgeMiddleware, _BodyTooLarge


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    raise AssertionError


def client_ip(trusted: list[str], peer: str | None, *forwarded: str) -> str | None:
    edge = EdgeMiddleware(_app, max_body_bytes=1024, trusted_proxies=trusted)
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    headers.append((b"host", b"testserver"))
    scope: dict[str, Any] = {"type": "http", "headers": headers}
    if peer is not None:
        scope["client"] = (peer, 1234)
    return edge.client_ip(scope)


PROXIES = ["10.0.0.0/8", "192.0.2.1", "2001:db8:ffff::/48"]


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        # No trusted proxies: the header is anybody's to forge.
        ([], "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
        # From a peer we do not trust: ignored.
        (PROXIES, "203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
        # From our proxy: the address it saw.
        (PROXIES, "10.0.0.5", ["198.51.100.1"], "198.51.100.1"),
        (PROXIES, "192.0.2.1", ["198.51.100.1"], "198.51.100.1"),
        # A client forging a hop: the proxy appended the real one on the right.
        (PROXIES, "10.0.0.5", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        # Two proxies of ours in a row.
        (PROXIES, "10.0.0.5", ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),
        # Everything is ours: the leftmost is as far as we can see.
        (PROXIES, "10.0.0.5", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        # Our proxy with no header at all (a health check from the proxy itself).
        (PROXIES, "10.0.0.5", [], "10.0.0.5"),
        (PROXIES, "10.0.0.5", [" , "], "10.0.0.5"),
        # IPv6.
        (PROXIES, "2001:db8:ffff::1", ["2001:db8:1::7"], "2001:db8:1::7"),
        # Garbage where an address should be: the nearest address we can vouch for, never the
        # garbage itself (it would land in the audit log).
        (PROXIES, "10.0.0.5", ["198.51.100.1, <script>"], "10.0.0.5"),
        (PROXIES, "10.0.0.5", ["198.51.100.1, " + "x" * 200 + ", 10.2.2.2"], "10.2.2.2"),
        (PROXIES, "10.0.0.5", ["garbage, 198.51.100.1"], "198.51.100.1"),
        # Several header lines are one list, in order: the forged first line does not win.
        (PROXIES, "10.0.0.5", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
        # No peer at all (a unix socket).
        (PROXIES, None, ["198.51.100.1"], None),
    ],
)
def test_client_ip(
    trusted: list[str], peer: str | None, forwarded: list[str], expected: str | None
) -> None:
    assert client_ip(trusted, peer, *forwarded) == expected


def test_trusted_proxy_networks_are_parsed_leniently() -> None:
    # Host bits set in a network are accepted (strict=False), as operators write them.
    assert client_ip(["10.0.0.1/8"], "10.200.0.1", "198.51.100.1") == "198.51.100.1"


def test_peer_that_is_not_an_address_is_not_trusted() -> None:
    # Starlette's TestClient and some servers give a name, not an address.
    assert client_ip(PROXIES, "testclient", "198.51.100.1") == "testclient"


# ---------------------------------------------------------------- the middleware on raw ASGI


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.messages if m["type"] == "http.response.start"))


def http_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/x",
        "headers": headers,
        "client": ("203.0.113.7", 1),
    }


def body_messages(*chunks: bytes) -> Any:
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


async def test_unparseable_content_length_is_left_to_the_stream_count() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    edge = EdgeMiddleware(app, max_body_bytes=1024, trusted_proxies=[])
    ok = Recorder()
    await edge(http_scope([(b"content-length", b"abc")]), body_messages(b"x" * 10), ok)
    assert ok.status == 204
    big = Recorder()
    await edge(
        http_scope([(b"content-length", b"abc")]), body_messages(b"x" * 800, b"x" * 800), big
    )
    assert big.status == 413


async def test_body_over_the_limit_after_the_response_started_aborts() -> None:
    # An app that answers before reading the whole body (a streaming echo): too late for a 413.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            await send({"type": "http.response.body", "body": b".", "more_body": True})

    edge = EdgeMiddleware(app, max_body_bytes=1024, trusted_proxies=[])
    sent = Recorder()
    with pytest.raises(_BodyTooLarge):
        await edge(http_scope([]), body_messages(b"x" * 800, b"x" * 800, b"x"), sent)
    assert [m["type"] for m in sent.messages].count("http.response.start") == 1


async def test_other_protocols_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    edge = EdgeMiddleware(app, max_body_bytes=1024, trusted_proxies=[])
    await edge({"type": "lifespan"}, body_messages(b""), Recorder())
    assert seen == ["lifespan"]


# ---------------------------------------------------------------- behind a proxy nobody trusts


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _request(edge: EdgeMiddleware, peer: str, *headers: tuple[bytes, bytes]) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "headers": list(headers),
        "client": (peer, 4321),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    await edge(scope, receive, send)


XFF = (b"x-forwarded-for", b"198.51.100.1")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "TRUSTED_PROXIES" in r.getMessage()]


@pytest.mark.parametrize("peer", ["10.0.0.5", "172.16.3.4", "192.168.1.1", "127.0.0.1", "fd00::1"])
async def test_forwarded_requests_from_a_private_proxy_warn_once(
    caplog: pytest.LogCaptureFixture, peer: str
) -> None:
    edge = EdgeMiddleware(_answer, max_body_bytes=1024, trusted_proxies=[])
    for _ in range(3):
        await _request(edge, peer, XFF)
    assert len(_warnings(caplog)) == 1
    assert "X-Forwarded-For" in _warnings(caplog)[0]


@pytest.mark.parametrize(
    ("trusted", "peer", "headers"),
    [
        (["10.0.0.0/8"], "10.0.0.5", [XFF]),  # the proxy is trusted: nothing to say
        ([], "93.184.216.34", [XFF]),  # a client on the internet forging the header
        ([], "10.0.0.5", []),  # a private client, no proxy
        ([], "not-an-address", [XFF]),
    ],
)
async def test_no_warning_otherwise(
    caplog: pytest.LogCaptureFixture,
    trusted: list[str],
    peer: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    edge = EdgeMiddleware(_answer, max_body_bytes=1024, trusted_proxies=trusted)
    await _request(edge, peer, *headers)
    assert _warnings(caplog) == []
