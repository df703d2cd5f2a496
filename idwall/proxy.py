"""Streaming reverse proxy: HTTP and WebSockets to the upstreams, over one keep-alive pool.

The caller (the gateway app) has already normalised the path, matched the route,
checked policy and cleaned the headers (:mod:`idwall.httpnorm`); this module only
moves bytes. Neither direction is buffered whole: request bodies stream from
``request.content`` and responses are written chunk by chunk as they arrive. The one
exception waits for nothing: a small body framed by Content-Length that has already
arrived complete with the response head goes out with the head in one write.

Errors of aiohttp's client are mapped at this boundary (before the response
has started): refused or broken connections and TLS failures become
:class:`~idwall.errors.UpstreamError` (502), timeouts
:class:`~idwall.errors.UpstreamTimeout` (504). Once the response head has been
sent to the client a problem body is impossible, so a failing upstream aborts
the client connection instead; the client sees a truncated message, never a
silently shortened one that looks complete.

Timeouts (``route.timeout`` or the default, seconds), as nginx counts them:
connecting (including the wait for a pooled connection), the response head
after the request body has been sent completely, and every gap between two
reads of the response body. A slow upload is therefore not cut by the header
timeout.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from idwall.errors import BadRequest, Forbidden, UpstreamError, UpstreamTimeout
from idwall.httpnorm import clean_response_headers, header_key

__all__ = ["Forwarder", "ProxyRoute", "UpstreamTLSLike", "upstream_ssl_context", "upstream_url"]


class UpstreamTLSLike(Protocol):
    """TLS settings towards one upstream (``idwall.config.UpstreamTLS`` has them)."""

    @property
    def ca(self) -> Path | None: ...

    @property
    def cert(self) -> Path | None: ...

    @property
    def key(self) -> Path | None: ...


class ProxyRoute(Protocol):
    """What the forwarder reads from a route (``idwall.config.Route`` has it)."""

    @property
    def upstream(self) -> str: ...

    @property
    def timeout(self) -> int | None: ...

    @property
    def websockets(self) -> bool: ...

    @property
    def upstream_tls(self) -> UpstreamTLSLike | None: ...


SSLFor = Callable[[ProxyRoute], ssl.SSLContext | None]

# The client library adds these when absent; the upstream must see what the client sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


# ws_connect makes its own handshake; the client's key and offers belong to the other hop.
_WS_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
    "sec-websocket-extensions", "sec-websocket-accept",
})
# Close codes that may not appear in a close frame (RFC 6455 §7.4.1).
_UNSENDABLE_CLOSE = frozenset({1004, 1005, 1006, 1015})
_BAD_GATEWAY_CLOSE = 1014  # IANA WebSocket close code registry: "Bad Gateway"
_WS_CLOSE_TIMEOUT = 5.0


def upstream_ssl_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A verifying client context for an https upstream: TLS 1.2+, host name checked.

    ``ca`` replaces the system trust store when given. ``cert`` (with ``key``, or a
    PEM holding both) is the client certificate for mutual TLS to the upstream.
    Raises ``ValueError`` for a key without a certificate and ``OSError`` /
    ``ssl.SSLError`` when a file cannot be read or the pair does not match.
    """
    if key is not None and cert is None:
        raise ValueError("upstream TLS: a client key was given without a client certificate")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


def _default_ssl_for(route: ProxyRoute) -> ssl.SSLContext | None:
    tls = route.upstream_tls
    if tls is None:
        return None  # system trust for https upstreams
    return upstream_ssl_context(tls.ca, tls.cert, tls.key)


@functools.lru_cache(maxsize=1024)
def _upstream_base(upstream: str) -> URL:
    url = URL(upstream)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"upstream must be an http(s)://host[:port][/base] URL, got {upstream!r}")
    return url


def upstream_url(upstream: str, path: str, query: str) -> URL:
    """The URL for the upstream: its base path + the normalised ``path``, the raw ``query``.

    Nothing is re-encoded: ``path`` is already in normal form and the query is the
    client's bytes, so the upstream sees exactly what the policy was decided on.

    >>> str(upstream_url("http://x:9001/base/", "/a%2Cb", "q=%20"))
    'http://x:9001/base/a%2Cb?q=%20'
    """
    base = _upstream_base(upstream)
    return URL.build(
        scheme=base.scheme,
        host=base.raw_host or "",
        port=base.explicit_port,
        path=base.raw_path.rstrip("/") + path,
        query_string=query,
        encoded=True,
    )


#: Bodies up to this size that have arrived whole with the head are answered in one write.
COALESCE_MAX = 64 * 1024


def _complete_body(
    method: str, upstream: aiohttp.ClientResponse, headers: list[tuple[str, str]]
) -> bytes | None:
    """The whole response body when it is already buffered, small and framed by Content-Length; else None.

    Only what the upstream has already delivered in full is taken: a body still
    arriving (streaming, large, or of unknown length) returns None and is streamed,
    so the first byte of a stream is never held back and a kill still cuts it mid-way.
    HEAD and bodiless statuses stay on the streaming path, which keeps their headers as sent.
    """
    if method == "HEAD" or upstream.status in (204, 304) or upstream.status < 200:
        return None
    length = next((value for name, value in headers if name.lower() == "content-length"), None)
    if length is None or not length.isdigit() or int(length) > COALESCE_MAX:
        return None
    content = upstream.content
    if not content.is_eof() or content.exception() is not None or content.total_bytes != int(length):
        return None
    return content.read_nowait()


def _raw_query(request: web.Request) -> str:
    # request.query_string is percent-decoded by yarl; the upstream gets the client's form.
    query = request.raw_path.partition("?")[2]
    return query.partition("#")[0]


class Forwarder:
    """One upstream connection pool and the two ways of forwarding through it.

    ``ssl_for(route)`` gives the TLS context for an https upstream (the default
    builds one from ``route.upstream_tls``, system trust without it). Contexts are
    cached per TLS profile so pooled connections are reused; aiohttp keys pooled
    connections by context, so profiles never share a connection.

    ``limit``/``limit_per_host`` default to 0 (no cap): every live download and
    WebSocket holds one upstream connection for its whole life, so a cap would make
    the next client wait for the upstream timeout instead of reaching the app.
    """

    def __init__(
        self,
        *,
        timeout_default: float,
        ssl_for: SSLFor | None = None,
        limit: int = 0,
        limit_per_host: int = 0,
    ) -> None:
        self._timeout_default = timeout_default
        self._ssl_for = ssl_for or _default_ssl_for
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._ssl_cache: dict[object, ssl.SSLContext | None] = {}
        self._client_timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pool (call once, from the running loop)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
        )

    async def close(self) -> None:
        """Close the pool and every pooled upstream connection."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Forwarder.start() was not called")
        return self._session

    def _ssl(self, route: ProxyRoute) -> ssl.SSLContext | bool:
        if _upstream_base(route.upstream).scheme != "https":
            return False
        key = route.upstream_tls
        if key not in self._ssl_cache:
            self._ssl_cache[key] = self._ssl_for(route)
        return self._ssl_cache[key] or True

    def _timeout(self, route: ProxyRoute) -> float:
        return float(route.timeout) if route.timeout is not None else self._timeout_default

    def _client_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # One frozen ClientTimeout per distinct value instead of one per request.
        timeout = self._client_timeouts.get(seconds)
        if timeout is None:
            timeout = self._client_timeouts[seconds] = aiohttp.ClientTimeout(
                total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
            )
        return timeout

    async def forward(
        self,
        request: web.Request,
        *,
        route: ProxyRoute,
        path: str,
        headers: list[tuple[str, str]],
        on_chunk: Callable[[int], None] | None = None,
    ) -> web.StreamResponse:
        """Send ``request`` to the route's upstream and stream the answer back.

        ``path`` is the normalised path and ``headers`` the cleaned request headers.
        ``on_chunk(n)`` is called with the size of each response chunk written.
        Raises UpstreamError / UpstreamTimeout before the response has started;
        after that, a failing upstream aborts the client connection.
        """
        timeout = self._timeout(route)
        url = upstream_url(route.upstream, path, _raw_query(request))
        try:
            upstream = await self._client.request(
                request.method,
                url,
                headers=CIMultiDict(headers),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                ssl=self._ssl(route),
                timeout=self._client_timeout(timeout),
            )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(
                f"the upstream did not answer within {timeout:g}s",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(
                "the upstream refused or broke the connection",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        try:
            cleaned = clean_response_headers(list(upstream.headers.items()))
            body = _complete_body(request.method, upstream, cleaned)
            if body is not None:
                # The whole body is already here: head and body leave in one write (one TLS record)
                # instead of two. Nothing waited for it, so no first byte is delayed.
                upstream.release()
                if on_chunk is not None and body:
                    on_chunk(len(body))
                return web.Response(status=upstream.status, reason=upstream.reason, headers=cleaned, body=body)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=cleaned)
        except ValueError as exc:
            upstream.close()
            raise UpstreamError(
                "the upstream sent a response head the gateway cannot relay",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        except BaseException:
            upstream.close()
            raise
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            await response.write_eof()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionError):
            # Upstream broke mid-body (or the client went away): the head is already sent,
            # so the only honest signal left is to cut the client connection.
            upstream.close()
            if request.transport is not None:
                request.transport.abort()
            return response
        except BaseException:
            upstream.close()
            raise
        upstream.release()
        return response

    async def forward_websocket(
        self,
        request: web.Request,
        *,
        route: ProxyRoute,
        path: str,
        headers: list[tuple[str, str]],
    ) -> web.WebSocketResponse:
        """Connect the client's WebSocket to the upstream and relay frames until either side closes.

        Text, binary and close frames (with their code and reason) go both ways;
        pings are answered on each hop. Raises BadRequest when the client did not
        ask for a WebSocket, Forbidden when the route does not allow them, and
        UpstreamError / UpstreamTimeout when the upstream handshake fails.
        """
        if request.headers.get("Upgrade", "").strip().lower() != "websocket":
            raise BadRequest("expected a WebSocket upgrade request (Upgrade: websocket)")
        if not route.websockets:
            raise Forbidden("WebSockets are not enabled for this route")
        timeout = self._timeout(route)
        offered = [
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for p in value.split(",")
            if p.strip()
        ]
        url = upstream_url(route.upstream, path, _raw_query(request))
        upstream_headers = CIMultiDict((n, v) for n, v in headers if header_key(n) not in _WS_HANDSHAKE)
        try:
            async with asyncio.timeout(timeout):
                upstream = await self._client.ws_connect(
                    url,
                    protocols=offered,
                    headers=upstream_headers,
                    ssl=self._ssl(route),
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamError(
                f"the upstream refused the WebSocket handshake with status {exc.status}",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(
                f"the upstream did not accept the WebSocket within {timeout:g}s",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError(
                "the upstream refused or broke the WebSocket connection",
                log_detail=f"{url.origin()}: {exc!r}",
            ) from None
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoping=True,
            # The client's close is acknowledged by _pump after the upstream has it.
            autoclose=False,
            timeout=_WS_CLOSE_TIMEOUT,
        )
        try:
            await client.prepare(request)
            await _relay(client, upstream)
        finally:
            # Also on cancellation: a killed or vanished client must not leave the upstream open.
            if not upstream.closed:
                await upstream.close(code=WSCloseCode.GOING_AWAY)
        return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    abnormal_code: int,
) -> None:
    """Copy frames from ``source`` to ``sink``; when ``source`` closes, close ``sink`` likewise.

    A clean close passes its code and reason on, to ``sink`` first and only then
    back to ``source`` as the acknowledgement, so the code has reached the far side
    before the near side may hang up. A source that vanished without a close frame
    closes the sink with ``abnormal_code``.
    """
    while True:
        msg = await source.receive()
        if msg.type is WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is WSMsgType.CLOSING:
            return  # the other direction is closing this socket already
        elif msg.type is WSMsgType.CLOSE:
            code, reason = msg.data, (msg.extra or "").encode("utf-8")
            if code in _UNSENDABLE_CLOSE:
                code, reason = WSCloseCode.OK, b""
            break
        elif msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
            code, reason = abnormal_code, b""
            break
    if not sink.closed:
        await sink.close(code=code, message=reason)
    if not source.closed:
        await source.close(code=code, message=reason)


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Run both directions until one side closes, then finish the other."""
    to_upstream = asyncio.create_task(_pump(client, upstream, WSCloseCode.GOING_AWAY))
    to_client = asyncio.create_task(_pump(upstream, client, _BAD_GATEWAY_CLOSE))
    try:
        done, pending = await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (ConnectionError, aiohttp.ClientError)):
                raise exc
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
