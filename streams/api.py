"""The HTTP API served by the worker: artifacts, anchors, proofs, health and metrics.

Views only read: the index and Merkle stores the worker writes, the blob store, and the anchors
and events topics. Every error is a JSON body `{"error": ..., "detail": ...}`, never a
traceback: a route that does not exist, a method a route does not take, a `LockerError` a view
did not catch, and anything unexpected (a 500, logged on one line with the request).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence

import faust
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from faust.web import Request, Response, View

from locker import anchors
from locker.cas import BlobStore
from locker.config import Settings
from locker.decoding import shorten
from locker.digests import is_digest
from locker.errors import ArtifactNotFound, IntegrityError, LockerError, NotFound
from locker.events import KINDS
from projections import proofs
from projections.anchor_store import AnchorStore
from projections.index import ArtifactRecord
from projections.merkle_store import MerkleStore
from projections.store import IndexStore
from projections.verify_store import VerifyStore
from streams.kafka import fetch_value
from streams.metrics import CONTENT_TYPE, Metrics, Snapshot
from streams.runtime import Loop
from streams.topics import Topics

log = structlog.get_logger("stella.api")


def install_api(
    app: faust.App,
    *,
    settings: Settings,
    blobs: BlobStore,
    index: IndexStore,
    trees: MerkleStore,
    chain: AnchorStore,
    verifier_key: str,
    loops: Sequence[Loop],
    verifications: VerifyStore,
    metrics: Metrics,
) -> None:
    topics = Topics(settings.topic_prefix)
    served: web.Application = app.web.web_app  # type: ignore[attr-defined]  # faust's aiohttp driver
    served.middlewares.append(json_errors)

    def not_found(view: View, what: str) -> Response:
        return view.json({"error": "not-found", "detail": what}, status=404)

    def indexed(view: View, artifact_id: str) -> ArtifactRecord | Response:
        """The index record of `artifact_id`, or the 400/404 response that says why not."""
        if not is_digest(artifact_id):
            detail = f"{artifact_id!r} is not sha256:<64 hex>"
            return view.json({"error": "invalid-digest", "detail": detail}, status=400)
        record = index.get(artifact_id)
        return record if record is not None else not_found(view, f"artifact {artifact_id} not found")

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            states = {loop.name: loop.status() for loop in loops}
            storage = storage_health(blobs, settings.max_content_bytes)
            commands = bool(app.consumer.assignment()) if app.consumer else False
            if any(s["state"] == "failed" for s in states.values()):
                status = "failed"
            elif not storage["writable"] or any(s["state"] == "retrying" for s in states.values()):
                status = "degraded"
            elif commands and all(s["state"] == "running" and s["assigned"] for s in states.values()):
                status = "ok"
            else:
                status = "starting"
            body = {"status": status, "loops": states, "commands_assigned": commands, "storage": storage}
            return self.json(body, status=200 if status == "ok" else 503)

    @app.page("/artifacts")
    class Artifacts(View):
        async def get(self, request: Request) -> Response:
            subject = request.query.get("subject")
            kind = request.query.get("kind")
            if subject:
                if not is_digest(subject):
                    return self.json({"error": "invalid-digest", "detail": subject}, status=400)
                ids = index.by_subject(subject)
            elif kind:
                if kind not in KINDS:
                    return self.json({"error": "invalid-kind", "detail": kind}, status=400)
                ids = index.by_kind(kind)
            else:
                return self.json(
                    {"error": "missing-query", "detail": "give ?subject=sha256:... or ?kind=..."},
                    status=400,
                )
            found = [index.get(artifact_id) for artifact_id in ids]
            return self.json({"artifacts": [r.public() for r in found if r is not None]})

    @app.page("/artifacts/{artifact_id}")
    class Artifact(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            started = time.perf_counter()
            try:
                outcome, response = await self.retrieve(artifact_id)
            except Exception:
                metrics.retrievals.labels("error").inc()
                raise  # answered by `json_errors`
            metrics.retrievals.labels(outcome).inc()
            if outcome == "ok":
                metrics.retrieval_latency.observe(time.perf_counter() - started)
            return response

        async def retrieve(self, artifact_id: str) -> tuple[str, Response]:
            """The answer, and its outcome for /metrics (`streams.metrics.RETRIEVAL_OUTCOMES`)."""
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return ("invalid" if record.status == 400 else "not-found"), record
            if not record.servable:  # never served as if it were good
                body = {"error": record.status, "detail": record.status_reason}
                return "unservable", self.json(body, status=409)
            try:
                data = await asyncio.to_thread(blobs.read_checked, artifact_id)
            except ArtifactNotFound:
                detail = f"{artifact_id} is indexed but its blob is missing"
                return "blob-missing", self.json({"error": "blob-missing", "detail": detail}, status=409)
            except IntegrityError as error:
                body = {"error": "integrity-mismatch", "detail": str(error)}
                return "integrity-mismatch", self.json(body, status=409)
            media_type = record.media_type or "application/octet-stream"
            return "ok", self.bytes(data, content_type=media_type)

    @app.page("/artifacts/{artifact_id}/meta")
    class ArtifactMeta(View):
        async def get(self, request: Request, artifact_id: str) -> Response:
            record = indexed(self, artifact_id)
            if not isinstance(record, ArtifactRecord):
                return record
            return self.json(record.public())

    def locker_error(view: View, error: LockerError) -> Response:
        return view.json(error_body(error), status=error_status(error))

    @app.page("/anchors")
    class Anchors(View):
        async def get(self, request: Request) -> Response:
            limit = request.query.get("limit", "")
            if limit and not (limit.isascii() and limit.isdigit()):
                return self.json({"error": "invalid-limit", "detail": limit}, status=400)
            found = chain.anchors(limit=int(limit) if limit else None)
            return self.json({"anchors": [anchors.summary(e.stored, e.anchor()) for e in found]})

    @app.page("/anchors/{anchor_id}")
    class Anchor(View):
        async def get(self, request: Request, anchor_id: str) -> Response:
            try:
                found = chain.find(None if anchor_id == "latest" else anchor_id)
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
                item, anchor = chain.find(request.query.get("anchor"))
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
                return self.json(
                    {"error": "missing-query", "detail": "give ?old=<anchor>&new=<anchor>"}, status=400
                )
            try:
                out = proofs.consistency(trees, chain.find(old), chain.find(new))
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
                return web.json_response(error_body(missing), status=error_status(missing))
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


def error_body(error: LockerError) -> dict[str, str]:
    return {"error": type(error).__name__, "detail": str(error)}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error response into JSON; see the module docstring."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = f"{request.method} {request.path}: {exc.reason}"
        return web.json_response(
            {"error": exc.reason.lower().replace(" ", "-"), "detail": detail}, status=exc.status
        )
    except LockerError as exc:
        return web.json_response(error_body(exc), status=error_status(exc))
    except Exception as exc:  # a bug: the client gets JSON, the log gets the traceback
        error = f"{type(exc).__name__}: {shorten(str(exc))}"
        log.error("request failed", method=request.method, path=request.path, error=error, exc_info=exc)
        body = {"error": "internal", "detail": f"{error} (see the service log)"}
        return web.json_response(body, status=500)


def storage_health(blobs: BlobStore, max_content_bytes: int) -> dict[str, object]:
    """Can the blob store take one more artifact of the largest size allowed?"""
    try:
        stat = os.statvfs(blobs.tmp)
    except OSError as exc:
        return {"writable": False, "detail": f"{blobs.root}: {exc.strerror}"}
    free = stat.f_bavail * stat.f_frsize
    if not os.access(blobs.tmp, os.W_OK):
        return {"writable": False, "free_bytes": free, "detail": f"{blobs.tmp} is not writable"}
    if free < max_content_bytes:
        return {"writable": False, "free_bytes": free, "detail": f"{blobs.root}: less than one artifact free"}
    return {"writable": True, "free_bytes": free}
