"""The OpenAPI document and the routes the service registers are the same set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from unittest import mock

import pytest

from locker import config
from streams import openapi, webserver
from streams.api import install_api


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """(method, path) of every route of the API, as the worker serves it once its server starts."""
    monkeypatch.setenv("STELLA_HOME", str(tmp_path))
    settings = config.load()
    app = webserver.App("openapi-test", limits=webserver.limits(settings), web_enabled=True)  # the worker's
    parts = {
        name: mock.Mock()
        for name in ("blobs", "index", "trees", "chain", "verifications", "metrics", "leadership")
    }
    install_api(app, settings=settings, verifier_key="", loops=[], **parts)
    app.web.init_server()  # what starting the server does: faust's own blueprints would be added here
    router = app.web.web_app.router  # type: ignore[attr-defined]
    return {(route.method, route.resource.canonical) for route in router.routes()}


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in openapi.DOCUMENT["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_is_served(
    served: set[tuple[str, str]],
) -> None:
    assert {route for route in served if route[0] != "HEAD"} == documented()


def test_every_route_also_answers_head(served: set[tuple[str, str]]) -> None:
    assert {path for method, path in served if method == "HEAD"} == {path for _, path in documented()}


def test_path_parameters_are_declared() -> None:
    for path, item in openapi.DOCUMENT["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


def test_every_reference_resolves() -> None:
    text = openapi.BODY.decode()
    names = set(re.findall(r'"#/components/schemas/(\w+)"', text))
    assert names <= set(openapi.DOCUMENT["components"]["schemas"])
    assert json.loads(text) == openapi.DOCUMENT


def test_artifact_ids_have_the_digest_pattern() -> None:
    pattern = re.compile(openapi.DIGEST["pattern"])
    assert pattern.search("sha256:" + "0" * 64)
    assert not pattern.search("sha256:" + "0" * 63)
    assert not pattern.search("sha256:" + "A" * 64)
