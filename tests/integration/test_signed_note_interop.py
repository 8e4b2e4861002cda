"""A stock C2SP signed-note verifier (Go's golang.org/x/mod/sumdb/note) accepts our notes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from locker import signing

SOURCE = Path(__file__).resolve().parents[1] / "interop" / "noteverify"


@pytest.fixture(scope="module")
def noteverify(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed: the stock verifier cannot be built")
    binary = tmp_path_factory.mktemp("go") / "noteverify"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SOURCE, check=True, timeout=300)
    return binary


def test_go_note_verifier_accepts_our_checkpoint(noteverify: Path) -> None:
    s = signing.Signer("stella.test/anchors", Ed25519PrivateKey.generate())
    text = signing.checkpoint_text("stella.test/evidence.events/3", 1_000_001, bytes(range(32)))
    note = signing.sign_note(text, s)
    ok = subprocess.run([str(noteverify), s.verifier.vkey], input=note, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == text
    forged = subprocess.run(
        [str(noteverify), s.verifier.vkey],
        input=note.replace("1000001", "1000002"),
        capture_output=True,
        text=True,
    )
    assert forged.returncode == 1
