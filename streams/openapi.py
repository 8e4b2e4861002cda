"""The API's OpenAPI 3.1 document (`DOCUMENT`), served as `BODY` at `GET /openapi.json`.

Built once, at import. The reports the API shares with the CLI are msgspec Structs: their schemas
are generated from the very types the views encode. The other bodies are described here, next to
the routes. Every route is a GET, and also answers HEAD (the same status and headers, no body).
`tests/unit/test_openapi.py` checks that the document and the routes the service registers are
the same set; `tests/integration/test_openapi.py` runs schemathesis against a live service.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from locker.events import KINDS
from projections.index import ARCHIVED, CORRUPTED, EXPIRED, INGESTED, VERIFICATION_FAILED
from projections.storage_stats import StorageStats
from streams.problems import CONTENT_TYPE as PROBLEM_TYPE
from streams.provenance import Provenance
from streams.runtime import STAGES
from streams.verify_report import FILTERS, VerifyReport

Schema = dict[str, Any]

DIGEST: Schema = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$", "examples": ["sha256:" + "ab" * 32]}
TIME: Schema = {"type": "string", "format": "date-time"}
COUNT: Schema = {"type": "integer", "minimum": 0}
STRING: Schema = {"type": "string"}
BASE64: Schema = {"type": "string", "contentEncoding": "base64"}
NULL: Schema = {"type": "null"}
NAME: Schema = {"type": "string", "minLength": 1}  # an anchor id or prefix, a run id


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these properties; open to properties added later (schema changes are additive)."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, NULL]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# Problem details (RFC 9457, `streams.problems`): `type` is about:blank, `title` the status's phrase;
# `error`, an extension member, is the machine-readable code.
PROBLEM = obj(
    {
        "type": {"const": "about:blank"},
        "title": STRING,
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "error": STRING,
        "detail": STRING,
    }
)

ARTIFACT_FIELDS: dict[str, Schema] = {
    "artifact_id": DIGEST,
    "digest": DIGEST,
    "size": COUNT,
    "kind": {"enum": list(KINDS)},
    "subjects": array(STRING),
    "producer": STRING,
    "media_type": STRING,
    "status": {"enum": [INGESTED, VERIFICATION_FAILED, CORRUPTED, EXPIRED, ARCHIVED]},
    "status_reason": STRING,
    "replicated_at": nullable(TIME),
    "ingested_at": TIME,
    "hold": nullable(obj({"reason": STRING, "since": nullable(TIME)})),
    "archive": nullable(obj({"archive_id": STRING, "location": STRING, "sha256": DIGEST})),
    "format": nullable(STRING),
    "predicate_type": nullable(STRING),
    "dependencies": array(STRING),
    "signature": nullable(obj({"status": STRING, "signed_by": STRING, "transparency_log": nullable(STRING)})),
}
ARTIFACT = obj(ARTIFACT_FIELDS)
# /meta also says whether storage holds the blob: `missing` for an indexed artifact whose blob is
# not there (lost, or a forged or misrouted event), `deleted` when expiry or an archive took it.
ARTIFACT_META = obj({**ARTIFACT_FIELDS, "blob": {"enum": ["present", "missing", "deleted"]}})

ANCHOR_SUMMARY_FIELDS: dict[str, Schema] = {
    "anchor_id": DIGEST,
    "chain_id": STRING,
    "sequence": COUNT,
    "created_at": TIME,
    "previous": BASE64,
    "offset": COUNT,
    "tree_sizes": {"type": "object", "additionalProperties": COUNT, "propertyNames": {"pattern": "^[0-9]+$"}},
}
ANCHOR_NEW_CHAIN: dict[str, Schema] = {"reason": STRING, "previous_chain_anchor": STRING}
ANCHOR_SUMMARY = obj(ANCHOR_SUMMARY_FIELDS, ANCHOR_NEW_CHAIN)
ANCHOR = obj(
    {
        **ANCHOR_SUMMARY_FIELDS,
        "origin": STRING,
        "key_name": STRING,
        "signature": BASE64,
        "partitions": array(
            obj({"partition": COUNT, "tree_size": COUNT, "root": BASE64, "last_offset": {"type": "integer"}})
        ),
        "checkpoints": array(STRING),
    },
    ANCHOR_NEW_CHAIN,
)

INCLUSION = obj(
    {
        "artifact_id": DIGEST,
        "anchor_id": DIGEST,
        "partition": COUNT,
        "offset": COUNT,
        "leaf_index": COUNT,
        "tree_size": COUNT,
        "leaf_value": BASE64,
        "leaf_hash": BASE64,
        "proof": array(BASE64),
        "root": BASE64,
        "checkpoint": STRING,
        "verifier_key": STRING,
    }
)

CONSISTENCY = obj(
    {
        "old_anchor": DIGEST,
        "new_anchor": DIGEST,
        "consistent": {"type": "boolean"},
        "partitions": array(
            obj(
                {
                    "partition": COUNT,
                    "old_size": COUNT,
                    "new_size": COUNT,
                    "old_root": BASE64,
                    "new_root": BASE64,
                    "proof": array(BASE64),
                    "verdict": STRING,
                }
            )
        ),
    }
)

LOOP = obj(
    {
        "state": {"enum": ["starting", "running", "retrying", "failed"]},
        "error": STRING,
        "assigned": {"type": "boolean"},
        "batches": COUNT,
        "records": COUNT,
        "stage_seconds": obj({stage: {"type": "number"} for stage in STAGES}),
        "last_batch_age_s": nullable({"type": "number"}),
    }
)

HEALTH = obj(
    {
        "status": {"enum": ["ok", "starting", "degraded", "failed"]},
        "loops": {"type": "object", "additionalProperties": ref("Loop")},
        "commands_assigned": {"type": "boolean"},
        "leader": {"type": "boolean"},
        "worker": COUNT,
        "storage": obj({"writable": {"type": "boolean"}}, {"free_bytes": COUNT, "detail": STRING}),
    }
)


def json_body(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def problem(description: str) -> Schema:
    """An error response: problem JSON."""
    return {"description": description, "content": {PROBLEM_TYPE: {"schema": ref("Problem")}}}


ERRORS: dict[str, Schema] = {
    "400": problem("A malformed id or query."),
    "404": problem("No such artifact, anchor or run, or no route."),
    "409": problem(
        "The artifact is not served: failed verification, marked corrupted, expired or archived "
        "(`error` is its status), or its blob is missing or no longer hashes to its id "
        "(`blob-missing`, `integrity-mismatch`)."
    ),
    "503": problem(
        "A damaged projection store or an unreachable broker; for a report (verification, "
        "provenance, storage stats), also `busy`: too many read at once (see `Retry-After`)."
    ),
}


def get(operation_id: str, summary: str, ok: Schema, errors: str, *parameters: Schema) -> Schema:
    """A GET operation answering 200 with `ok` or one of the `errors` (space-separated codes)."""
    responses = {"200": ok, **{code: ERRORS[code] for code in errors.split()}}
    operation: Schema = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    return {"get": operation}


def with_responses(operation: Schema, more: Schema) -> Schema:
    """`operation` (a `get`) answering `more` too."""
    operation["get"]["responses"].update(more)
    return operation


def header(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def path(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


SELECT: Schema = {
    "type": "object",
    "properties": {"subject": DIGEST, "kind": {"enum": list(KINDS)}},
    "anyOf": [{"required": ["subject"]}, {"required": ["kind"]}],
    "additionalProperties": False,
}
ARTIFACT_ID = path("artifact_id", DIGEST, "The artifact's id: its content's SHA-256.")
FILTER = query(
    "filter",
    {"enum": list(FILTERS), "default": "failed"},
    "Which artifacts: the failed ones (default), or those with one outcome.",
)


def _reports() -> tuple[dict[str, Schema], dict[str, Schema]]:
    """The schemas of the typed reports, and of the Structs they refer to."""
    (verification, provenance, storage), components = msgspec.json.schema_components(
        [VerifyReport, Provenance, StorageStats], ref_template="#/components/schemas/{name}"
    )
    for schema in components.values():  # docstrings as written, without their indentation
        if "description" in schema:
            schema["description"] = inspect.cleandoc(schema["description"])
    return {"verification": verification, "provenance": provenance, "storage": storage}, components


REPORTS, REPORT_COMPONENTS = _reports()
ANCHOR_BODY = json_body("The anchor.", ref("Anchor"))
VERIFY_REPORT_BODY = json_body("The run's report.", REPORTS["verification"])

PATHS: dict[str, Schema] = {
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "Whether every loop runs with its partitions and storage can take an artifact.",
            "responses": {
                "200": json_body("`status` is ok.", ref("Health")),
                "503": json_body("`status` is starting, degraded or failed.", ref("Health")),
            },
        }
    },
    "/artifacts": get(
        "listArtifacts",
        "The artifacts about a subject digest, of an evidence kind, or both.",
        json_body("The artifacts' records.", obj({"artifacts": array(ref("Artifact"))})),
        "400 503",
        {
            **query("select", SELECT, "`?subject=sha256:...`, `?kind=...`, or both.", required=True),
            "style": "form",
            "explode": True,  # the object's properties are the query's parameters
        },
    ),
    "/artifacts/{artifact_id}": with_responses(
        get(
            "getArtifact",
            "The artifact's bytes, checked against its id as they are read (`streams.serving`): "
            "always an attachment, with `X-Content-Type-Options: nosniff` and the digest as ETag.",
            {
                "description": "The bytes, with the producer's media type if it is an evidence type "
                "(without parameters), else application/octet-stream.",
                "content": {"*/*": {"schema": {}}},
            },
            "400 404 409 503",
            ARTIFACT_ID,
            header("Range", "One range of bytes (`bytes=first-last`, `bytes=first-`, `bytes=-n`)."),
            header("If-None-Match", "The ETag (the quoted digest) the client has: 304 if it matches."),
        ),
        {
            "206": {"description": "The range asked for.", "content": {"*/*": {"schema": {}}}},
            "304": {"description": "Not modified: the client's copy is this artifact."},
            "416": problem("The range starts past the end (`Content-Range: bytes */size`)."),
        },
    ),
    "/artifacts/{artifact_id}/meta": get(
        "getArtifactMeta",
        "The artifact's index record.",
        json_body("The record, and whether storage holds its blob.", ref("ArtifactMeta")),
        "400 404 503",
        ARTIFACT_ID,
    ),
    "/artifacts/{artifact_id}/provenance": get(
        "getProvenance",
        "The artifact's chain of custody, read from its partition of the log "
        "(as `stella evidence provenance show --format json`).",
        json_body("Each step with its log position and the first anchor covering it.", REPORTS["provenance"]),
        "400 404 503",
        ARTIFACT_ID,
    ),
    "/anchors": get(
        "listAnchors",
        "Anchors in log order.",
        json_body("The anchors.", obj({"anchors": array(ref("AnchorSummary"))})),
        "400 503",
        query("limit", COUNT, "At most this many."),
    ),
    "/anchors/latest": get(
        "getLatestAnchor",
        "The latest anchor.",
        ANCHOR_BODY,
        "404 503",
    ),
    "/anchors/{anchor_id}": get(
        "getAnchor",
        "One anchor.",
        ANCHOR_BODY,
        "404 503",
        path("anchor_id", NAME, "An anchor id, or a unique prefix of its hex."),
    ),
    "/proofs/inclusion/{artifact_id}": get(
        "getInclusionProof",
        "The proof that the artifact's ingest event is in an anchor's tree (checked before it is sent).",
        json_body("The proof, as `stella evidence proof` gives it.", ref("InclusionProof")),
        "400 404 503",
        ARTIFACT_ID,
        query("anchor", NAME, "An anchor id or prefix (default: the latest)."),
    ),
    "/proofs/consistency": get(
        "getConsistencyProof",
        "Per-partition consistency proofs from an older anchor to a newer one.",
        json_body("The proofs and their verdicts.", ref("ConsistencyProof")),
        "400 404 503",
        query("old", NAME, "The older anchor's id or prefix.", required=True),
        query("new", NAME, "The newer anchor's id or prefix.", required=True),
    ),
    "/verifications/latest": get(
        "getLatestVerification",
        "The verification run that completed last and its artifacts "
        "(as `stella evidence verify-report --latest --format json`).",
        VERIFY_REPORT_BODY,
        "400 404 503",
        FILTER,
    ),
    "/verifications/{run_id}": get(
        "getVerification",
        "A verification run, completed or running, and its artifacts "
        "(as `stella evidence verify-report --run ID --format json`).",
        VERIFY_REPORT_BODY,
        "400 404 503",
        path("run_id", NAME, "The run's id, as `verify` prints it."),
        FILTER,
    ),
    "/storage/stats": get(
        "getStorageStats",
        "What the locker stores, and the storage roots' room "
        "(as `stella evidence storage stats --format json`).",
        json_body("Counts by kind, status and day, replica state, free space.", REPORTS["storage"]),
        "503",
    ),
    "/metrics": get(
        "metrics",
        "Prometheus metrics (text exposition format 0.0.4).",
        {"description": "The exposition.", "content": {"text/plain": {"schema": STRING}}},
        "503",
    ),
    "/openapi.json": get(
        "openapi",
        "This document.",
        json_body("The OpenAPI document.", {"type": "object"}),
        "",
    ),
}

# The routes that list artifacts or reveal more than one: they need the API token as a bearer.
PROTECTED = frozenset({"/artifacts", "/verifications/latest", "/verifications/{run_id}", "/storage/stats"})
for _path in PROTECTED:
    PATHS[_path]["get"]["security"] = [{"bearer": []}]
    PATHS[_path]["get"]["responses"]["401"] = problem(
        "No `Authorization: Bearer <token>` with the API token (Service:TokenFile)."
    )

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "Evidence Locker",
        "version": "1",
        "description": "Read-only: artifacts, anchors, proofs, verification reports, provenance, "
        "storage stats, health and metrics. Every error is problem details (RFC 9457, "
        f"`{PROBLEM_TYPE}`): `type` about:blank, `title`, `status`, `detail`, and `error`, a "
        "machine-readable code. Beyond any route's own: 405 (with `Allow`), 413 (a body over "
        "Service:MaxBodyBytes), 414 (a URL over Service:MaxUrlBytes), 431 (a header over "
        "Service:MaxHeaderBytes, or over Service:MaxHeaders of them), 400 (not well-formed HTTP), "
        "and 503 `too-many-connections` (over Service:MaxConnections). "
        "Every route also answers HEAD. A route that takes query parameters answers 400 to one it "
        "does not take (`unknown-query`) and to one given twice (`repeated-query`); the others "
        "ignore the query. The routes that list artifacts need the API token as a bearer.",
    },
    "paths": PATHS,
    "components": {
        "schemas": {
            "Problem": PROBLEM,
            "Artifact": ARTIFACT,
            "ArtifactMeta": ARTIFACT_META,
            "AnchorSummary": ANCHOR_SUMMARY,
            "Anchor": ANCHOR,
            "InclusionProof": INCLUSION,
            "ConsistencyProof": CONSISTENCY,
            "Loop": LOOP,
            "Health": HEALTH,
            **REPORT_COMPONENTS,
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token in Service:TokenFile (`stella init` creates it, mode 0600).",
            }
        },
    },
}

BODY = json.dumps(DOCUMENT, indent=1).encode()


def _query_names(operation: Schema) -> frozenset[str]:
    """The query parameters an operation takes (an exploded object's are its properties)."""
    names: set[str] = set()
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query":
            schema = parameter["schema"]
            names |= set(schema["properties"]) if parameter.get("explode") else {parameter["name"]}
    return frozenset(names)


# path -> the query parameters its route takes, for the routes that take any (`streams.api`)
QUERIES: dict[str, frozenset[str]] = {
    path: names for path, item in PATHS.items() if (names := _query_names(item["get"]))
}
