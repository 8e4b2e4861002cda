"""The HTTP server under the API: size limits, a header timeout, an idle timeout, a connection cap,
and problem JSON (`streams.problems`) for the errors aiohttp answers before any middleware runs.

faust's aiohttp driver (`faust.web.drivers.aiohttp.Web`) serves its `aiohttp.web.Application`
through an `AppRunner` and a `TCPSite`, whose protocol is aiohttp's `RequestHandler`. faust lets
the application be configured (`web_application_options`: the body limit and its middleware go
there) but not the protocol, and aiohttp's protocol has no header timeout, no connection cap, and
answers what its parser refuses (a URL or a header too long, too many headers, a malformed
request line) in plain text, quoting the request. Hence, each the least that does it:

- `Handler`, aiohttp's `RequestHandler` with the parser's limits, the idle timeout
  (`keepalive_timeout`), a header timeout and problem JSON errors (`handle_error`, aiohttp's hook
  for them);
- `Site`, a TCP site like aiohttp's whose protocol factory makes `Handler`s, or a `Refusal`
  beyond `Service:MaxConnections`;
- `Web`, faust's driver with `Site` as its TCP transport (`_new_transport_tcp` is where faust
  builds the site, and its server runner is a private attribute only a subclass should touch);
- `App`, faust's App with `Web` as its driver: faust picks a driver in `App._new_web`, from a
  registry keyed by the `web` setting's URL scheme that a class of ours could join only through a
  setuptools entry point of an installed package, or by editing faust's module state.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any

import faust
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler as View
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from faust.app.base import BootStrategy
from faust.types import AppT
from faust.web import base
from faust.web.drivers import aiohttp as faust_aiohttp
from yarl import URL

from locker.config import Settings
from locker.errors import UsageError
from streams import problems

log = structlog.get_logger("stella.api")


@dataclass(frozen=True)
class Limits:
    """What one request and the server may take (the `Service:` keys of `KEYS`; README, "HTTP API")."""

    max_url_bytes: int  # the request target (path and query)
    max_header_bytes: int  # one header, name and value
    max_headers: int
    max_body_bytes: int
    header_timeout: float  # from a request's first byte (a connection's opening) to its last header
    idle_timeout: float  # a keep-alive connection between requests
    max_connections: int


KEYS = {
    "max_url_bytes": "Service:MaxUrlBytes",
    "max_header_bytes": "Service:MaxHeaderBytes",
    "max_headers": "Service:MaxHeaders",
    "max_body_bytes": "Service:MaxBodyBytes",
    "header_timeout": "Service:HeaderTimeout",
    "idle_timeout": "Service:IdleTimeout",
    "max_connections": "Service:MaxConnections",
}


def limits(settings: Settings) -> Limits:
    """The configured limits; `UsageError` for one below 1."""
    values = {field: settings.integer(key) for field, key in KEYS.items()}
    if low := [KEYS[field] for field, value in values.items() if value < 1]:
        raise UsageError(f"{', '.join(low)} must be at least 1")
    return Limits(**values)


class Handler(RequestHandler):
    """aiohttp's protocol for one connection, with the limits of `Limits`.

    The header timeout runs from the connection's opening, and then from the first byte of each
    next request, until a request's headers are parsed; it is off while a request is answered
    (however slowly its client downloads) and while a keep-alive connection is idle (the idle
    timeout's part). When it fires the connection is closed, without an answer. A request
    pipelined behind one being answered, and stuck half-sent, is bounded by the idle timeout.

    aiohttp has no hook for "a request's headers are parsed": this reads two of its protocol's
    attributes, `_request_count` (requests parsed) and `_messages` (parsed, not yet answered).
    requirements.txt pins aiohttp; tests/unit/test_webserver.py and
    tests/integration/test_http_limits.py fail should their meaning change.
    """

    __slots__ = ("__weakref__", "_awaiting", "_header_timeout", "_header_timer", "_live")

    def __init__(
        self,
        server: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        live: weakref.WeakSet[Handler],
    ) -> None:
        super().__init__(
            server,
            loop=loop,
            keepalive_timeout=limits.idle_timeout,
            max_line_size=limits.max_url_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            access_log=None,  # type: ignore[arg-type]  # none, as in faust's runner (aiohttp takes None)
        )
        self._header_timeout = limits.header_timeout
        self._live = live
        self._awaiting = True  # the next request's headers: none parsed since the last answer
        self._header_timer: asyncio.TimerHandle | None = None
        live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count  # aiohttp counts each request (or parse error) it queues
        super().data_received(data)
        if self._request_count != parsed:
            self._awaiting = False
            self._disarm()
        elif self._awaiting and data and self._header_timer is None:
            self._arm()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if not self._messages:  # no request queued behind this one: the next is awaited
                self._awaiting = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._live.discard(self)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request its parser refused (`exc`; `status` is 400 whatever it
        was) or whose handling failed beyond the middlewares (500, or 504 on a timeout): a
        problem, and the connection closed, as aiohttp does. Its own text quotes the request."""
        if request.writer.output_size > 0:  # as aiohttp's: too late to answer
            raise ConnectionError("the response was sent already; no error response can follow")
        status, error, detail = self._problem(status, exc)
        if status >= 500:
            log.error("request failed", status=status, error=repr(exc), exc_info=exc)
        else:  # a client's error: which one, never its bytes
            log.info("bad request", status=status, error=error, peer=str(request.remote))
        answer = problems.response(status, error, detail)
        answer.force_close()
        return answer

    def _problem(self, status: int, exc: BaseException | None) -> tuple[int, str, str]:
        if isinstance(exc, LineTooLong):
            return self._too_long(exc)
        if isinstance(exc, HttpProcessingError):
            if "Too many headers" in exc.message:
                detail = f"more than {self.max_headers} request headers (Service:MaxHeaders)"
                return 431, problems.TOO_MANY_HEADERS, detail
            detail = "the request is not well-formed HTTP/1.1 (its request line, a header, or its framing)"
            return 400, problems.BAD_REQUEST, detail
        if status == 504:
            return 504, "timeout", "answering the request took too long"
        return 500, problems.INTERNAL, "an unexpected error; the service log has it"

    def _too_long(self, exc: LineTooLong) -> tuple[int, str, str]:
        # The parser says which limit a line broke (`args[1]`), not which line: the URL's is told
        # apart by its value. (Configured equal, a URL too long answers 431 too.)
        if exc.args[1] == self.max_line_size != self.max_field_size:
            detail = f"the URL is longer than {self.max_line_size} bytes (Service:MaxUrlBytes)"
            return 414, problems.URL_TOO_LONG, detail
        detail = f"a request header is longer than {self.max_field_size} bytes (Service:MaxHeaderBytes)"
        return 431, problems.HEADER_TOO_LARGE, detail


class Refusal(asyncio.Protocol):
    """A connection beyond `Service:MaxConnections`: answered at once, then half-closed, what it
    sends discarded, and closed when the client closes or after `LINGER` seconds. Closing at once
    with its request unread would reset the connection, and the client could lose the answer."""

    LINGER = 1.0

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._answer)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(self.LINGER, transport.close)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: it is refused whatever it says

    def eof_received(self) -> bool:
        self._transport.close()
        return False


class Site(web.BaseSite):
    """A TCP site like aiohttp's `TCPSite`, serving `runner`'s server through `Handler`s, at most
    `max_connections` at a time (a `Handler` counts from its making to its connection's loss)."""

    __slots__ = ("_busy", "_host", "_limits", "_live", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: Limits) -> None:
        super().__init__(runner)
        self._host, self._port, self._limits = host, port, limits
        # weak: a Handler whose connection never came up (its transport failed) drops out by itself
        self._live: weakref.WeakSet[Handler] = weakref.WeakSet()
        self._busy = problems.raw(
            503,
            problems.TOO_MANY_CONNECTIONS,
            f"{limits.max_connections} connections are open (Service:MaxConnections); try again",
            {"Retry-After": "1"},
        )

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._protocol(loop), self._host, self._port, backlog=self._backlog
        )

    def _protocol(self, loop: asyncio.AbstractEventLoop) -> asyncio.Protocol:
        """The protocol of a connection just accepted."""
        if len(self._live) >= self._limits.max_connections:
            return Refusal(self._busy)
        server = self._runner.server
        assert server is not None  # the runner is set up before a site starts
        return Handler(server, loop=loop, limits=self._limits, live=self._live)


def body_within(max_bytes: int) -> Middleware:
    """413 to a request whose `Content-Length` is over `max_bytes`, before any view: no route
    reads a body, so aiohttp's `client_max_size` (checked as a body is read) would never answer.
    The connection closes after the answer. (A chunked body, of no declared length, is not read
    either: aiohttp discards it for up to its lingering time, 10 s, after the answer.)"""

    @web.middleware
    async def check(request: web.Request, handler: View) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_bytes:
            detail = f"the request body is over {max_bytes} bytes (Service:MaxBodyBytes)"
            answer = problems.response(413, problems.BODY_TOO_LARGE, detail)
            answer.force_close()
            return answer
        return await handler(request)

    return check


class Web(faust_aiohttp.Web):
    """faust's aiohttp driver, serving through `Site`."""

    def __init__(self, app: AppT, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    def _new_transport_tcp(self) -> web.BaseSite:
        return Site(self._runner, self.app.conf.web_bind, self.app.conf.web_port, self.limits)


class _Boot(BootStrategy):  # type: ignore[misc]  # faust is untyped here
    """No Kafka consumer or producer of faust's own: the loops have theirs (streams.runtime,
    streams.leadership); faust supervises them and runs the timers and the web server."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class App(faust.App):
    """faust's App, with `Web` as its web driver and the body limit on its application."""

    BootStrategy = _Boot

    def __init__(self, id: str, *, limits: Limits, **options: Any) -> None:
        self.limits = limits  # before faust's __init__: nothing reads it until `web` is first used
        application = {
            "client_max_size": limits.max_body_bytes,
            "middlewares": [body_within(limits.max_body_bytes)],
        }
        super().__init__(id, web_application_options=application, **options)

    def _new_web(self) -> base.Web:
        return Web(self, limits=self.limits)
