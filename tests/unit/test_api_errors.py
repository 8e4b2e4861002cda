"""The API's error middleware on a bare aiohttp app: every error is problem JSON, never a traceback."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from locker.errors import ArtifactNotFound, BrokerUnavailable, InvalidInput, LockerError, StoreDamaged
from streams import problems
from streams.api import error_status, json_errors, query_as_documented
from streams.serving import served_type


async def boom(request: web.Request) -> web.Response:
    raise ZeroDivisionError("division by zero in a view")


async def damaged(request: web.Request) -> web.Response:
    raise StoreDamaged("the Merkle store at /x is damaged: node 1 at level 0 of partition 0 is missing")


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def get(path: str, method: str = "GET") -> tuple[int, str, dict]:
    code, content_type, body, _ = asyncio.run(answer(path, method))
    return code, content_type, body


async def answer(path: str, method: str = "GET") -> tuple[int, str, dict, dict[str, str]]:
    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/boom", boom)
    app.router.add_get("/damaged", damaged)
    app.router.add_get("/fine", fine)
    async with TestClient(TestServer(app)) as client:
        resp = await client.request(method, path)
        return resp.status, resp.content_type, json.loads(await resp.text()), dict(resp.headers)


@pytest.mark.parametrize(
    ("path", "method", "status", "error"),
    [
        ("/nope", "GET", 404, "not-found"),
        ("/artifacts/../../etc/passwd", "GET", 404, "not-found"),
        ("/fine", "POST", 405, "method-not-allowed"),
        ("/damaged", "GET", 503, "StoreDamaged"),
    ],
)
def test_errors_are_problem_json(path: str, method: str, status: int, error: str) -> None:
    code, content_type, body = get(path, method)
    assert (code, content_type, body["error"]) == (status, problems.CONTENT_TYPE, error)
    assert (body["type"], body["status"]) == ("about:blank", status) and body["title"] and body["detail"]
    assert "nope" not in body["detail"] and "passwd" not in body["detail"]  # the request is never echoed


def test_a_405_says_which_methods_the_route_takes() -> None:
    code, _, _, headers = asyncio.run(answer("/fine", "DELETE"))
    assert code == 405 and set(headers["Allow"].split(",")) == {"GET", "HEAD"}


def test_an_unexpected_exception_is_a_json_500_and_one_log_line() -> None:
    with capture_logs() as logs:
        code, content_type, body = get("/boom")
    assert (code, content_type, body["error"]) == (500, problems.CONTENT_TYPE, "internal")
    assert (
        body["detail"] == "ZeroDivisionError (see the service log)"
    )  # not its text: it may quote the request
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


def query(path: str) -> tuple[int, dict]:
    """GET `path` from an app with the API's middlewares; `/anchors` takes `limit`, `/healthz` nothing."""

    async def main() -> tuple[int, dict]:
        app = web.Application(middlewares=[json_errors, query_as_documented])
        app.router.add_get("/anchors", fine)
        app.router.add_get("/healthz", fine)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get(path)
            return resp.status, json.loads(await resp.text())

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/anchors?limit=1", 200, None),
        ("/anchors", 200, None),
        ("/anchors?limit=1&limt=2", 400, "unknown-query"),
        ("/anchors?limit=1&limit=2", 400, "repeated-query"),
        ("/healthz?ts=1&ts=2", 200, None),  # a route without a query ignores one
        ("/nope?x=1&x=2", 404, "not-found"),
    ],
)
def test_a_route_takes_the_query_parameters_it_documents(path: str, status: int, error: str | None) -> None:
    code, body = query(path)
    assert (code, body.get("error")) == (status, error)


@pytest.mark.parametrize(
    ("media_type", "served"),
    [
        ("application/vnd.in-toto+json", "application/vnd.in-toto+json"),
        ("Application/SPDX+JSON", "application/spdx+json"),
        ("text/plain; charset=utf-8", "text/plain"),  # the base type only
        ("", "application/octet-stream"),
        ("text/html", "application/octet-stream"),  # not evidence: never rendered as a page
        ("image/svg+xml", "application/octet-stream"),
        ("text/plain\r\nX-Injected: yes", "application/octet-stream"),
        ("not a media type", "application/octet-stream"),
    ],
)
def test_an_artifact_is_served_with_its_media_type_only_if_it_is_evidence(
    media_type: str, served: str
) -> None:
    assert served_type(media_type) == served
