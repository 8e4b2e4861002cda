"""The HTTP API served by the worker: artifacts, anchors, proofs, verification reports, provenance,
storage stats, health and metrics; its OpenAPI document (`streams.openapi`) at `/openapi.json`.

Views only read: the index and Merkle stores the worker writes, the blob store, and the anchors
and events topics. The reports the CLI gives too (a verification run, an artifact's provenance,
storage stats) are the same functions and the same typed results as the CLI's `--format json`;
they read the log or the whole index, so they run in a worker thread, `REPORTS_AT_ONCE` at a
time (503 `busy` beyond that). Every error is problem JSON (`streams.problems`), never a
traceback and never the request's bytes: a route that does not exist, a method a route does not
take, a `LockerError` a view did not catch, and anything unexpected (a 500, logged on one line
with the request). The server under the API (`streams.webserver`) answers the rest: requests too
large or malformed, and connections beyond the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus

import faust
import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from faust.web import Request, Response, View
from faust.web.base import BlueprintManager

from locker import anchors, tokens
from locker.cas import Blobs
from locker.config import Settings
from locker.decoding import shorten
from locker.digests import is_digest
from locker.errors import ArtifactNotFound, IntegrityError, LockerError, NotFound
from locker.events import KINDS
from projections import proofs
from projections.anchor_store import AnchorStore
from projections.index import GONE, ArtifactRecord
from projections.merkle_store import MerkleStore
from projections.storage_stats import stats as storage_stats
from projections.store import IndexStore
from projections.verify_store import VerifyStore
from streams import openapi, problems, serving
from streams.kafka import fetch_value
from streams.leadership import Leadership
from streams.metrics import CONTENT_TYPE, Metrics, Snapshot
from streams.provenance import provenance
from streams.runtime import Loop
from streams.topics import Topics
from streams.verify_report import FILTERS, report

log = structlog.get_logger("stella.api")

REPORTS_AT_ONCE = 2  # verification reports, provenances and storage stats read at once


def install_api(
    app: faust.App,
    *,
    settings: Settings,
    blobs: Blobs,
    index: IndexStore,
    trees: MerkleStore,
    chain: AnchorStore,
    verifier_key: str,
    loops: Sequence[Loop],
    verifications: VerifyStore,
    metrics: Metrics,
    leadership: Leadership,
    token: str | None = None,
) -> None:
    topics = Topics(settings.topic_prefix)
    served: web.Application = app.web.web_app  # type: ignore[attr-defined]  # faust's aiohttp driver
    served.middlewares.extend([json_errors, bearer_required(token), query_as_documented])
    app.web.blueprints = BlueprintManager()  # not faust's own pages (`/`, `/router`, `/table`): not ours
    served.router.add_get("/openapi.json", openapi_json)

    def invalid_digest(view: View, what: str) -> Response:
        return problem(view, 400, "invalid-digest", f"{what} is not sha256:<64 hex>")

    def indexed(view: View, artifact_id: str) -> ArtifactRecord | Response:
        """The index record of `artifact_id`, or the 400/404 response that says why not."""
        if not is_digest(artifact_id):
            return invalid_digest(view, "the artifact id")
        record = index.get(artifact_id)
        if record is None:  # a well-formed digest: naming it echoes nothing but hex
            return problem(view, 404, "not-found", f"artifact {artifact_id} not found")
        return record

    reports = asyncio.Semaphore(REPORTS_AT_ONCE)

    async def typed_report(view: View, read: Callable[[], msgspec.Struct]) -> Response:
        """The JSON of `read()`, read in a worker thread; 503 `busy` when `REPORTS_AT_ONCE` are."""
        if reports.locked():
            detail = f"{REPORTS_AT_ONCE} reports are being read; try again in a moment"
            return problem(view, 503, "busy", detail, {"Retry-After": "1"})
        async with reports:
            result = await asyncio.to_thread(read)
        return view.bytes(msgspec.json.encode(result), content_type="application/json")

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            states = {loop.name: loop.status() for loop in loops}
            storage = await asyncio.to_thread(storage_health, blobs, settings.max_content_bytes)
            commands = leadership.joined  # the commands group has settled, on this worker or another
            if any(s["state"] == "failed" for s in states.values()):
                status = "failed"
            elif not storage["writable"] or any(s["state"] == "retrying" for s in states.values()):
                status = "degraded"
            elif commands and all(s["state"] == "running" and s["assigned"] for s in states.values()):
                status = "ok"
            else:
                status = "starting"
            body = {
                "status": status,
                "loops": states,
                "commands_assigned": leadership.leading,
                "leader": leadership.leading,
                "worker": settings.worker,
                "storage": storage,
            }
            return self.json(body, status=200 if status == "ok" else 503)

    @app.page("/artifacts")
    class Artifacts(View):
        async def get(self, request: Request) -> Response:
            subject, kind = request.query.get("subject"), request.query.get("kind")
            if subject is not None and not is_digest(subject):
                return invalid_digest(self, "subject")
            if kind is not None and kind not in KINDS:
                return problem(self, 400, "invalid-kind", f"kind is one of {', '.join(KINDS)}")
            if subject is not None:
                ids = index.by_subject(subject)
            elif kind is not None:
                ids = index.by_kind(kind)
            else:
                return problem(self, 400, "missing-query", "give ?subject=sha256:... or ?kind=..., or both")
            found = [index.get(artifact_id) for artifact_id in ids]
            return self.json(
                {"artifacts": [r.public() for r in found if r is not None and kind in (None, r.kind)]}
            )

    @app.page("/artifacts/{artifact_id}")
    class Artifact(View):
        async def get(self, request: Request, artifact_id: str) -> Response | web.StreamResponse:
            started = time.perf_counter()
            try:
                outcome, response = await self.retrieve(request, artifact_id)
            except Exception:
                metrics.retrievals.labels("error").inc()
                raise  # answered by `json_errors`
            metrics.retrievals.labels(outcome).inc()
            if outcome == "ok":
                metrics.retrieval_latency.observe(time.perf_counter() - started)
            return response

        async def retrieve(
            self, request: Request, artifact_id: str
        ) -> tuple[str, Response | web.StreamResponse]:
            """The answer, and its outcome for /metrics (`streams.metrics.RETRIEVAL_OUTCOMES`)."""
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return ("invalid" if record.status == 400 else "not-found"), record
            if not record.servable:  # never served as if it were good
                return "unservable", problem(self, 409, record.status, record.status_reason)
            try:  # faust's aiohttp driver hands its views aiohttp's request
                return await serving.send(request, blobs, artifact_id, record.media_type)  # type: ignore[arg-type]
            except ArtifactNotFound:
                detail = f"{artifact_id} is indexed but its blob is missing"
                return "blob-missing", problem(self, 409, "blob-missing", detail)
            except IntegrityError as error:
                return "integrity-mismatch", problem(self, 409, "integrity-mismatch", str(error))

    @app.page("/artifacts/{artifact_id}/meta")
    class ArtifactMeta(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            if await asyncio.to_thread(blobs.exists, artifact_id):
                blob = "present"
            else:
                blob = "deleted" if record.status in GONE else "missing"
            return self.json({**record.public(), "blob": blob})

    def live_chain() -> contextlib.AbstractContextManager[AnchorStore]:
        return contextlib.nullcontext(chain)

    @app.page("/artifacts/{artifact_id}/provenance")
    class ArtifactProvenance(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            if not is_digest(artifact_id):
                return invalid_digest(self, "the artifact id")
            return await typed_report(self, lambda: provenance(settings, index, live_chain, artifact_id))

    async def verification(view: View, request: Request, run_id: str | None) -> Response:
        only = request.query.get("filter", "failed")
        if only not in FILTERS:
            return problem(view, 400, "invalid-filter", f"filter is one of {', '.join(FILTERS)}")

        def read() -> msgspec.Struct:
            try:
                return report(settings, verifications, index, run_id=run_id, only=only)
            except NotFound:  # its text names the run asked for: not echoed
                if run_id is None:
                    raise
                raise NotFound("no verification run has the id given") from None

        return await typed_report(view, read)

    @app.page("/verifications/latest")  # before `/verifications/{run_id}`, so that this one wins
    class LatestVerification(View):
        async def get(self, request: Request) -> Response:
            return await verification(self, request, None)

    @app.page("/verifications/{run_id}")
    class Verification(View):
        async def get(self, request: Request, run_id: str) -> Response:
            return await verification(self, request, run_id)

    @app.page("/storage/stats")
    class StorageStats(View):
        async def get(self, request: Request) -> Response:
            return await typed_report(self, lambda: storage_stats(settings, index))

    def locker_error(view: View, error: LockerError) -> Response:
        return problem(view, *locker_problem(error))

    def find_anchor(asked: str | None, what: str) -> tuple[anchors.StoredAnchor, anchors.AnchorCreated]:
        """`chain.find(asked)`; its `NotFound` names `what` was asked, not the value given."""
        try:
            return chain.find(asked)
        except NotFound:
            if asked is None:
                raise
            detail = (
                f"no anchor, or more than one, matches the {what} given (an anchor id or a prefix of its hex)"
            )
            raise NotFound(detail) from None

    @app.page("/anchors")
    class Anchors(View):
        async def get(self, request: Request) -> Response:
            limit = request.query.get("limit")
            if limit is not None and not (limit.isascii() and limit.isdigit()):
                return problem(self, 400, "invalid-limit", "limit is a count (ASCII digits)")
            found = chain.anchors(limit=None if limit is None else int(limit))
            return self.json({"anchors": [anchors.summary(e.stored, e.anchor()) for e in found]})

    @app.page("/anchors/{anchor_id}")
    class Anchor(View):
        async def get(self, request: Request, anchor_id: str) -> Response:
            try:
                found = find_anchor(None if anchor_id == "latest" else anchor_id, "id")
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json(anchors.full(*found))

    @app.page("/proofs/inclusion/{artifact_id}")
    class InclusionProof(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            try:
                item, anchor = find_anchor(request.query.get("anchor"), "anchor")
                value = await fetch_value(settings, topics.events, record.partition, record.offset)
                out = proofs.inclusion(trees, item, anchor, record.partition, record.offset, value)
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json({"artifact_id": artifact_id, **out, "verifier_key": verifier_key})

    @app.page("/proofs/consistency")
    class ConsistencyProof(View):
        async def get(self, request: Request) -> Response:
            old, new = request.query.get("old"), request.query.get("new")
            if not old or not new:
                return problem(self, 400, "missing-query", "give ?old=<anchor>&new=<anchor>")
            try:
                out = proofs.consistency(
                    trees, find_anchor(old, "old anchor"), find_anchor(new, "new anchor")
                )
            except LockerError as exc:
                return locker_error(self, exc)
            return self.json(out)

    # The two routes that dashboards and monitors poll are plain aiohttp handlers, registered
    # before the faust views (so `/anchors/latest` wins over `/anchors/{anchor_id}`): a faust view
    # costs about as much CPU again as the answer. The latest anchor's JSON is built once per
    # change of the chain.
    latest_json: dict[int, bytes] = {}

    async def latest_anchor(request: web.Request) -> web.StreamResponse:
        position = chain.resume_at(0)
        body = latest_json.get(position)
        if body is None:
            entry = chain.latest()
            if entry is None:
                missing = NotFound("there is no anchor yet; run `stella evidence anchor create`")
                return problems.response(*locker_problem(missing))
            body = json.dumps(anchors.full(entry.stored, entry.anchor())).encode()
            latest_json.clear()
            latest_json[position] = body
        return web.Response(body=body, content_type="application/json")

    rendered: list[tuple[float, bytes]] = []  # (when, body): the last exposition, kept METRICS_TTL
    broken: dict[int, int] = {}  # the chain's applied position -> its broken links, counted once

    async def metrics_text(request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if not rendered or now - rendered[0][0] > METRICS_TTL:
            lag = {loop.name: await loop.lag() for loop in loops}
            rendered[:] = [(now, metrics.render(snapshot(lag)))]
        return web.Response(body=rendered[0][1], headers={"Content-Type": METRICS_TYPE})

    def snapshot(lag: dict[str, dict[int, int]]) -> Snapshot:
        latest = chain.latest()
        created = None if latest is None or latest.created_at is None else latest.created_at.timestamp()
        position = chain.resume_at(0)
        if position not in broken:
            broken.clear()
            broken[position] = chain.broken_links()
        failures, last_run = verifications.summary()
        usage = blobs.disk_usage()
        sizes = {p: trees.tree_size(p) for p in trees.applied()}
        anchored = (
            {} if latest is None else {h.partition: h.tree_size for h in latest.anchor().body.partitions}
        )
        return Snapshot(
            artifacts=index.count(),
            stored_bytes=index.total_bytes(),
            tree_sizes=sizes,
            anchor_age=None if created is None else time.time() - created,
            unanchored=sum(max(size - anchored.get(p, 0), 0) for p, size in sizes.items()),
            broken_links=broken[position],
            integrity_failures=failures,
            last_run=last_run,
            free_bytes=None if usage is None else usage.free,
            capacity_bytes=None if usage is None else usage.total,
            reserve_bytes=reserve,
            lag=lag,
            loop_seconds={loop.name: loop.seconds for loop in loops},
        )

    reserve = settings.free_space_reserve
    served.router.add_get("/anchors/latest", latest_anchor)
    served.router.add_get("/metrics", metrics_text)


# /metrics is rendered at most every METRICS_TTL seconds: scrapers poll every few seconds at the
# most, and 200 clients at once then cost what `/anchors/latest` costs (README, "Performance").
METRICS_TTL = 0.5
METRICS_TYPE = CONTENT_TYPE


def error_status(error: LockerError) -> int:
    """The HTTP status for a `LockerError`, from its exit code."""
    return {1: 404, 2: 400, 4: 503, 5: 400}.get(error.exit_code, 500)


def locker_problem(error: LockerError) -> tuple[int, str, str]:
    """The status, `error` code (the class's name) and detail of a `LockerError`'s problem."""
    return error_status(error), type(error).__name__, str(error)


def problem(
    view: View, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A view's problem response (`streams.problems`)."""
    encoded = problems.encode(status, error, detail)
    extra = None if headers is None else dict(headers)
    return view.bytes(encoded, content_type=problems.CONTENT_TYPE, status=status, headers=extra)


# The fixed details of the HTTP errors aiohttp raises (its own texts may quote the request), and
# the headers of theirs that go with the answer.
HTTP_DETAILS = {
    404: "no such route; /openapi.json lists them",
    405: "this route does not take this method; `Allow` lists those it takes",
    413: "the request body is too large",
}
HTTP_CODES = {413: problems.BODY_TOO_LARGE}
HTTP_HEADERS = frozenset({"Allow", "Retry-After", "WWW-Authenticate"})


def http_problem(exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (a route or method that does not exist, say) as a problem."""
    error = HTTP_CODES.get(exc.status) or exc.reason.lower().replace(" ", "-")
    detail = HTTP_DETAILS.get(exc.status) or HTTPStatus(exc.status).description
    headers = {name: value for name, value in exc.headers.items() if name in HTTP_HEADERS}
    return problems.response(exc.status, error, detail, headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error response into problem JSON; see the module docstring."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_problem(exc)
    except LockerError as exc:
        return problems.response(*locker_problem(exc))
    except Exception as exc:  # a bug: the client gets a problem, the log gets the traceback
        error = f"{type(exc).__name__}: {shorten(str(exc))}"
        log.error("request failed", method=request.method, path=request.path, error=error, exc_info=exc)
        # the exception's text may hold what the request sent: its type only
        detail = f"{type(exc).__name__} (see the service log)"
        return problems.response(500, problems.INTERNAL, detail)


def bearer_required(token: str | None) -> Middleware:
    """The routes that list artifacts or reveal more than one (`openapi.PROTECTED`) answer 401
    unless the request carries the API token as its bearer (none configured: always 401)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        protected = resource is not None and resource.canonical in openapi.PROTECTED
        if protected and (token is None or not tokens.matches(request.headers.get("Authorization"), token)):
            detail = "this route lists artifacts: send `Authorization: Bearer <token>` (Service:TokenFile)"
            if token is None:
                detail = "this route lists artifacts, and the service has no API token: run `stella init`"
            return problems.response(
                401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="evidence-locker"'}
            )
        return await handler(request)

    return check


@web.middleware
async def query_as_documented(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A route that takes query parameters (`openapi.QUERIES`) answers 400 to one it does not
    take and to one given twice: API requests forbid unknown fields. The others ignore the query
    (a monitor's cache-busting parameter, say)."""
    resource = request.match_info.route.resource
    taken = None if resource is None else openapi.QUERIES.get(resource.canonical)
    if taken is not None:
        if set(request.query) - taken:  # named by what the route takes: the others are not echoed
            detail = f"this route takes only {', '.join(sorted(taken))}"
            return problems.response(400, "unknown-query", detail)
        if repeated := sorted(key for key in taken if len(request.query.getall(key, [])) > 1):
            return problems.response(400, "repeated-query", f"give {', '.join(repeated)} once")
    return await handler(request)


def storage_health(blobs: Blobs, max_content_bytes: int) -> dict[str, object]:
    """Can the blob store take one more artifact of the largest size allowed?"""
    return blobs.readiness(max_content_bytes)


async def openapi_json(request: web.Request) -> web.StreamResponse:
    return web.Response(body=openapi.BODY, content_type="application/json")
