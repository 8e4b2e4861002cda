"""One root error, `LockerError`, with a subtree per kind of failure.

Each class carries the exit code the CLI maps it to (see README, "Exit codes"):
0 success, 1 the answer is "no", 2 usage error, 3 timed out waiting for the service,
4 broker or storage unreachable, 5 refused (bad input, unsafe request); and a `hint`, what to do
next, which the CLI adds to a message that does not already name a `stella` command.
"""

from __future__ import annotations


class LockerError(Exception):
    """Root of every error the locker raises on purpose."""

    exit_code = 1
    hint = "`stella doctor` checks the whole locker"


# Domain: the answer is "no".
class NotFound(LockerError):
    """Something asked for does not exist (an artifact, a backup, an anchor)."""

    exit_code = 1
    hint = "check the id (`stella evidence index lookup <id>`, `stella evidence anchor list`)"


class ArtifactNotFound(NotFound):
    def __init__(self, artifact_id: str) -> None:
        super().__init__(f"artifact {artifact_id} not found")
        self.artifact_id = artifact_id


# Verification: the answer is "no, and here is why".
class IntegrityError(LockerError):
    """Stored bytes do not match what they should be; carries expected vs actual."""

    exit_code = 1
    hint = "runbook INC-001: `stella evidence verify-report --latest --filter failed`"

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


# Usage.
class UsageError(LockerError):
    exit_code = 2
    hint = "`stella <command> --help` shows the options"


# Waiting for the service.
class TimedOut(LockerError):
    exit_code = 3
    hint = "`stella service status` and `stella doctor --category evidence` tell why the service is slow"


# Infrastructure.
class Unreachable(LockerError):
    """The broker or the storage could not be reached."""

    exit_code = 4
    hint = "`stella doctor` names what is down"


class BrokerUnavailable(Unreachable):
    hint = "`stella broker status`, `stella doctor --category kafka`"


class StorageUnavailable(Unreachable):
    hint = "`stella doctor --category storage`"


class StoreUnreachable(StorageUnavailable):
    """The blob store as a whole cannot be reached now (an S3 server down, answering 5xx, refusing
    the credentials): loops retry it, and never skip a blob for it as they skip one bad file."""


class StoreDamaged(LockerError):
    """A projection store holds what its writer never writes (a missing Merkle node, a garbled
    row). Not `Unreachable`: retrying cannot help, the store must be rebuilt from the log."""

    exit_code = 4
    hint = "rebuild it from the log: `stella evidence index rebuild`"


class StartFailed(LockerError):
    """A background process (the service, the broker) ended while starting. `exit_code` is the
    one it ended with when that is a documented code (1-5), else 1."""

    hint = "`stella service status` shows its log"

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code if 1 <= exit_code <= 5 else 1


# Refusals.
class Refused(LockerError):
    """Bad input or an unsafe request; nothing was changed."""

    exit_code = 5
    hint = "nothing was changed: correct the input and run it again"


class InvalidInput(Refused):
    """Input that fails validation. `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
