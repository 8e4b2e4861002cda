"""The API's error middleware on a bare aiohttp app: every error is JSON, never a traceback."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from locker.errors import ArtifactNotFound, BrokerUnavailable, InvalidInput, LockerError, StoreDamaged
from streams.api import error_status, json_errors


async def boom(request: web.Request) -> web.Response:
    raise ZeroDivisionError("division by zero in a view")


async def damaged(request: web.Request) -> web.Response:
    raise StoreDamaged("the Merkle store at /x is damaged: node 1 at level 0 of partition 0 is missing")


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def get(path: str, method: str = "GET") -> tuple[int, str, dict]:
    async def main() -> tuple[int, str, dict]:
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/boom", boom)
        app.router.add_get("/damaged", damaged)
        app.router.add_get("/fine", fine)
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path)
            return resp.status, resp.content_type, json.loads(await resp.text())

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "method", "status", "error"),
    [
        ("/nope", "GET", 404, "not-found"),
        ("/artifacts/../../etc/passwd", "GET", 404, "not-found"),
        ("/fine", "POST", 405, "method-not-allowed"),
        ("/damaged", "GET", 503, "StoreDamaged"),
    ],
)
def test_errors_are_json(path: str, method: str, status: int, error: str) -> None:
    code, content_type, body = get(path, method)
    assert (code, content_type, body["error"]) == (status, "application/json", error)
    assert body["detail"]


def test_an_unexpected_exception_is_a_json_500_and_one_log_line() -> None:
    with capture_logs() as logs:
        code, content_type, body = get("/boom")
    assert (code, content_type, body["error"]) == (500, "application/json", "internal")
    assert body["detail"].startswith("ZeroDivisionError: division by zero in a view")
    assert "Traceback" not in body["detail"]
    [line] = [entry for entry in logs if entry["event"] == "request failed"]
    assert line["path"] == "/boom" and line["error"].startswith("ZeroDivisionError")


def test_success_passes_through() -> None:
    assert get("/fine") == (200, "application/json", {"ok": True})


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ArtifactNotFound("sha256:" + "0" * 64), 404),
        (InvalidInput("invalid-digest", "x"), 400),
        (BrokerUnavailable("down"), 503),
        (StoreDamaged("damaged"), 503),
    ],
)
def test_locker_errors_map_to_statuses(error: LockerError, status: int) -> None:
    assert error_status(error) == status
