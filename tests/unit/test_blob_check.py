"""The service's start-up check: are the blobs of indexed artifacts under `EvidenceLocker:Path`?"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from locker.cas import BlobStore
from locker.digests import digest_of
from locker.errors import StorageUnavailable
from locker.events import ArtifactIngested
from projections.store import IndexStore
from streams.worker import check_blobs

WHEN = datetime(2026, 11, 29, tzinfo=UTC)
CONTENTS = [b"artifact %d" % i for i in range(200)]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[IndexStore]:
    with IndexStore(tmp_path / "index") as store:
        store.apply(
            [
                (
                    0,
                    offset,
                    ArtifactIngested(artifact_id=digest_of(c), size=len(c), kind="sbom", ingested_at=WHEN),
                )
                for offset, c in enumerate(CONTENTS)
            ]
        )
        yield store


def blob_store(root: Path, contents: list[bytes]) -> BlobStore:
    blobs = BlobStore(root)
    blobs.ensure()
    blobs.put_many([(digest_of(c), c) for c in contents])
    return blobs


def test_the_sample_takes_both_ends_and_random_places(index: IndexStore) -> None:
    ids = sorted(digest_of(c) for c in CONTENTS)
    picked = index.sample_ids()
    assert set(ids[:3]) | set(ids[-3:]) <= set(picked) <= set(ids)
    assert 6 < len(picked) <= 26


def test_an_empty_index_needs_no_blobs(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "index") as empty:
        check_blobs(empty, BlobStore(tmp_path / "nowhere"))


def test_all_blobs_present_starts(index: IndexStore, tmp_path: Path) -> None:
    check_blobs(index, blob_store(tmp_path / "evidence", CONTENTS))


def test_a_path_without_the_blobs_refuses_to_start_and_says_why(index: IndexStore, tmp_path: Path) -> None:
    blob_store(tmp_path / "evidence", CONTENTS)
    elsewhere = tmp_path / "new-disk"
    with pytest.raises(StorageUnavailable) as caught:
        check_blobs(index, BlobStore(elsewhere))
    message = str(caught.value)
    assert caught.value.exit_code == 4 and "\n" not in message
    assert f"EvidenceLocker:Path = {elsewhere}" in message and "(of 200 indexed)" in message
    assert "Was EvidenceLocker:Path changed, or is that storage not mounted?" in message
    assert f"stella storage migrate --to {elsewhere}" in message
    assert not elsewhere.exists()  # the check creates nothing


def test_the_refusal_names_the_path_the_service_last_ran_with(index: IndexStore, tmp_path: Path) -> None:
    before = tmp_path / "evidence"
    blob_store(before, CONTENTS)
    elsewhere = tmp_path / "new-disk"
    with pytest.raises(StorageUnavailable) as caught:
        check_blobs(index, BlobStore(elsewhere), last_path=str(before))
    message = str(caught.value)
    assert f"EvidenceLocker:Path = {elsewhere}, which was {before} when the service last ran" in message
    assert f"`stella config set EvidenceLocker:Path {before}`" in message
    assert f"stella storage migrate --to {elsewhere}" in message


def test_some_blobs_missing_is_a_warning(index: IndexStore, tmp_path: Path) -> None:
    ids = sorted(digest_of(c) for c in CONTENTS)
    first = next(c for c in CONTENTS if digest_of(c) == ids[0])
    blobs = blob_store(tmp_path / "evidence", [c for c in CONTENTS if c != first])
    with capture_logs() as logs:
        check_blobs(index, blobs)
    [warning] = [entry for entry in logs if entry["event"] == "blobs missing"]
    assert warning["missing"] == 1 and warning["examples"] == [ids[0]]
