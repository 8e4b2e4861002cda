"""`stella evidence cleanup --temp-only` (runbook INC-004): temporary files left by interrupted
writes.

Blob writes go to a temp file in the store's `tmp/` folder, renamed to the blob's name once it is
durable (`locker.cas.BlobStore`); a crash or a full disk can leave temp files behind. A temp file is
removed when no live write can own it: when the service is stopped (the only writer), or when it
was last modified more than `GRACE` ago (a write takes seconds: one batch). Younger ones are kept
and counted. The storage test's probes (`probe-*.tmp`) are temp files too. (The service also
removes every temp file when it starts, before it writes: this command is for a running service,
or one that cannot start.) An S3 blob store has no temp files (a PUT is atomic): with
`EvidenceLocker:Backend = s3` only a replica folder is cleaned, and without one it is refused.
"""

from __future__ import annotations

import time
from typing import Any

from commands import service
from locker.cas import BlobStore, on_filesystem, open_store
from locker.config import Settings

GRACE = 15 * 60  # seconds


def temp_files(settings: Settings, *, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    running = service.any_pid(settings) is not None
    roots = []
    if settings.backend == "filesystem":
        roots.append(("evidence", settings.evidence_path))
    elif settings.replica_path is None:
        on_filesystem(open_store(settings), "`stella evidence cleanup --temp-only`")  # refused
    if settings.replica_path is not None:
        roots.append(("replica", settings.replica_path))
    removed = kept = removed_bytes = 0
    listed: list[dict[str, Any]] = []
    for role, root in roots:
        store = BlobStore(root.expanduser())
        for path in store.tmp_files() if store.tmp.is_dir() else []:
            try:
                info = path.stat()
            except FileNotFoundError:
                continue  # a live write renamed it meanwhile
            if running and now - info.st_mtime < GRACE:
                kept += 1
                continue
            if not dry_run:
                path.unlink(missing_ok=True)
            removed, removed_bytes = removed + 1, removed_bytes + info.st_size
            listed.append({"root": role, "path": str(path), "bytes": info.st_size})
    return {
        "dry_run": dry_run,
        "removed" if not dry_run else "would_remove": removed,
        "bytes": removed_bytes,
        "kept_recent": kept,
        "service_running": running,
        "files": listed[:1000],
    }
