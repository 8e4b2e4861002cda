"""Who a Kafka client is: the locker's principals, their passwords, and the options each client
library takes for them.

The locker's SASL/SCRAM principals (usernames are `Kafka:<Role>User`, default `stella-<role>`):

- **admin**: the local broker's super user; creates topics and ACLs (`stella broker start`,
  `stella init`) and nothing else.
- **service**: the worker; the only writer of the events, anchors, DLQ, verification and
  verify-task topics; reads every topic of the locker.
- **operator**: the CLI; writes commands and submissions (`stella evidence ingest`), reads every topic.
- **producer**: evidence producers; writes submissions only.
- **auditor**: reads the events and anchors topics only.

A process acts as `Kafka:Principal` (default operator; the worker always as service). Each
password is one line in `<Kafka:CredentialsPath>/<role>.password` (default
`STELLA_HOME/secrets/kafka`), mode 0600 in a 0700 folder: `create` writes them, `read` refuses a
file that others may read. No password is ever printed or logged; diagnostics redact them and
backups do not copy the secrets folder.
"""

from __future__ import annotations

import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from locker.errors import Refused, UsageError
from locker.files import create_secret

if TYPE_CHECKING:
    import ssl

Role = Literal["admin", "service", "operator", "producer", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
CA_FILE = "ca.pem"  # in the credentials folder: the local broker's CA, trusted when Kafka:CaFile is empty
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def role(name: str) -> Role:
    for known in ROLES:
        if known == name.strip().lower():
            return known
    raise UsageError(f"Kafka:Principal must be one of {', '.join(ROLES)}, got {name!r}")


def password_file(folder: Path, who: Role) -> Path:
    return folder / f"{who}.password"


def create(folder: Path) -> list[Role]:
    """A new random password for every principal that has none in `folder`; returns those made."""
    fresh = (who for who in ROLES if create_secret(password_file(folder, who), new_password()))
    return list(fresh)


def new_password() -> bytes:
    return (secrets.token_urlsafe(32) + "\n").encode()


def read(folder: Path, who: Role) -> str:
    """The password of `who`; `Refused` if its file is missing, readable by others, or empty."""
    path = password_file(folder, who)
    try:
        info = path.stat()
        password = path.read_text().strip()
    except FileNotFoundError:
        raise Refused(
            f"no Kafka password for the {who} principal at {path}: `stella broker start` creates the "
            "local broker's; for another cluster put the password there (or set Kafka:CredentialsPath), "
            "or set Kafka:SecurityProtocol = PLAINTEXT for a broker without authentication"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"Kafka password file {path} is unreadable: {exc}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise Refused(f"Kafka password file {path} is readable by others: chmod 600 {path}")
    if not password:
        raise Refused(f"Kafka password file {path} is empty")
    return password


@dataclass(frozen=True)
class ClientAuth:
    """How one client authenticates: protocol, SASL mechanism, username and password (None for
    PLAINTEXT and SSL), and the CA that signs the brokers' certificates (None: the system's)."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        import ssl  # here: the CLI's quick commands must not pay for it (tests/unit/test_cli_imports.py)

        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=None if self.ca_file is None else str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise Refused(f"Kafka:CaFile {self.ca_file} is not a usable CA bundle: {exc}") from None

    def aiokafka(self) -> dict[str, object]:
        """Keyword arguments for aiokafka's producer, consumer and admin clients."""
        options: dict[str, object] = {"security_protocol": self.protocol}
        if self.sasl:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        return options

    def librdkafka(self) -> dict[str, str]:
        """Properties for confluent-kafka (librdkafka) clients."""
        options = {"security.protocol": self.protocol.lower()}
        if self.sasl:
            options |= {
                "sasl.mechanism": self.mechanism,
                "sasl.username": self.username,
                "sasl.password": self.password,
            }
        if self.tls and self.ca_file is not None:
            options["ssl.ca.location"] = str(self.ca_file)
        return options
