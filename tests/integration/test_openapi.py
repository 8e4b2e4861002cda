"""schemathesis against a live service: every operation of `/openapi.json`, with values it
generates from the document (valid and invalid) and with the ids of a seeded locker, answers
without a server error and as documented (status code, content type, body schema)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.schemas import APIOperation

from locker.cas import BlobStore
from locker.config import Settings
from locker.digests import digest_of
from streams import openapi
from streams.topics import Topics
from tests.conftest import run_cli
from tests.integration.helpers import bearer, index_count, produce, submission, wait_for

pytestmark = pytest.mark.integration

SUBJECT = digest_of(b"the subject of the seeded evidence")
EXAMPLES = 50  # generated cases per operation and mode (valid, invalid), after the seeded ones
# what producers may give as an artifact's media type: served as it is, or as octet-stream
MEDIA_TYPES = ("text/plain; charset=utf-8", "text/html", "not a media type")  # CR/LF is refused at ingest
FAILED = (AssertionError, FailureGroup)  # what a failed check raises: one, or several at once


def cli_json(*args: str) -> Any:
    proc = run_cli(*args, "--format", "json", check=False)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def ingest(settings: Settings, contents: list[bytes], media_type: str = "") -> list[str]:
    """Submit `contents` as SBOMs about `SUBJECT`; their ids once the index holds them."""
    before = index_count(settings)
    records = [
        (digest_of(c).encode(), submission(c, kind="sbom", subjects=(SUBJECT,), media_type=media_type))
        for c in contents
    ]
    asyncio.run(produce(settings, Topics(settings.topic_prefix).submissions, records))
    wait_for(lambda: index_count(settings) == before + len(contents), what="ingest")
    return [digest_of(c) for c in contents]


def seed(settings: Settings) -> dict[str, list[Any]]:
    """Artifacts (some with media types no header can carry), two anchors and a verification run
    that found a damaged blob: values for each parameter of the document that lead to a 200 (and
    to a 409 for the damaged artifact)."""
    first = ingest(settings, [b"openapi evidence %d" % i for i in range(3)])
    old = cli_json("evidence", "anchor", "create")["anchor_id"]
    second = ingest(settings, [b"openapi evidence %d" % i for i in range(3, 5)])
    for n, media_type in enumerate(MEDIA_TYPES):
        second += ingest(settings, [b"media type %d" % n], media_type)
    new = cli_json("evidence", "anchor", "create")["anchor_id"]
    damaged = BlobStore(settings.evidence_path).path(first[0])
    damaged.chmod(0o644)
    damaged.write_bytes(b"not what was ingested")
    run = cli_json("evidence", "verify", "--mode", "full")["run"]["run_id"]
    return {
        "artifact_id": [first[1], first[0], *second],
        "select": [{"subject": SUBJECT}, {"kind": "sbom"}, {"subject": SUBJECT, "kind": "sbom"}],
        "limit": ["1"],
        "anchor_id": [new, old, old.removeprefix("sha256:")[:12]],
        "anchor": [old],
        "old": [old],
        "new": [new],
        "run_id": [run],
        "filter": ["failed", "ok", "mismatch"],
        "Range": ["bytes=0-3", "bytes=-2", "bytes=999999-", "bytes=0-1,3-4"],
        "If-None-Match": [f'"{first[1]}"', '"something else"', "*"],
    }


def seeded_cases(operation: APIOperation, known: dict[str, list[Any]]) -> list[Case]:
    """A case for each seeded value of each of the operation's parameters (its other required
    parameters at their first seeded value); one without parameters for an operation with none."""
    parameters = operation.definition.raw.get("parameters", [])
    where = {p["name"]: p["in"] for p in parameters}
    required = {p["name"]: known[p["name"]][0] for p in parameters if p["required"]}
    cases = []
    for name in where:
        for value in known[name]:
            chosen = {**required, name: value}
            path = {n: v for n, v in chosen.items() if where[n] == "path"}
            headers = {n: v for n, v in chosen.items() if where[n] == "header"}
            query: dict[str, str] = {}
            for n, v in chosen.items():
                if where[n] == "query":  # an object's properties are parameters of their own (explode)
                    query.update(v if isinstance(v, dict) else {n: v})
            cases.append(operation.Case(path_parameters=path, query=query, headers=headers))
    return cases or [operation.Case()]


def generated(operation: APIOperation, mode: GenerationMode, base_url: str, auth: dict[str, str]) -> None:
    """`EXAMPLES` cases schemathesis generates for `operation` in `mode`, each called and checked.
    A negative mode with nothing to generate (every value the document rejects cannot be sent,
    such as a path parameter that takes any text) is nothing to test."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Case) -> None:
        case.call_and_validate(base_url=base_url, headers=auth)

    try:
        call()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise


def test_the_api_answers_as_documented(anchoring: Settings) -> None:
    known = seed(anchoring)
    base_url = anchoring.api_url
    auth = bearer(anchoring)  # the token the routes that list artifacts need
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    assert schema.raw_schema == json.loads(openapi.BODY)
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the route its document came from
    assert {o.label for o in operations} == {f"GET {path}" for path in openapi.PATHS} - {"GET /openapi.json"}
    failures: list[str] = []
    for operation in operations:
        for case in seeded_cases(operation, known):
            try:
                case.call_and_validate(base_url=base_url, headers=auth)
            except FAILED as exc:  # the failed checks and a curl line to reproduce
                failures.append(str(exc))
        for mode in GenerationMode:
            try:
                generated(operation, mode, base_url, auth)
            except FAILED as exc:
                failures.append(f"{operation.label}, {mode.value} cases: {exc}")
    assert not failures, "\n\n".join(failures)
    assert served_types(base_url) == ["text/plain", "application/octet-stream", "application/octet-stream"]


def served_types(base_url: str) -> list[str]:
    types = []
    for n in range(len(MEDIA_TYPES)):
        with urllib.request.urlopen(f"{base_url}/artifacts/{digest_of(b'media type %d' % n)}") as response:
            types.append(response.headers["Content-Type"])
    return types
