"""The locker's topics and ACLs on Kafka: what `stella init` sets up (README, "Kafka principals and
ACLs").

`grants` is pure: every ACL one locker needs (its topic prefix and consumer group), by principal.
`set_up` creates the missing topics and those ACLs, as the admin principal when this home holds
its password (the local broker's), else as this process's principal, which then needs rights to
create topics and leaves the ACLs to the cluster's administrators (`grants` lists them).

aiokafka has no ACL API; confluent-kafka's admin client (librdkafka, the Kafka project's C client)
creates and describes them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from locker import kafka_auth
from locker.config import Settings
from locker.errors import BrokerUnavailable, Refused
from locker.kafka_auth import Role
from streams.topics import Topics, anchor_writer_id

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding, AdminClient

Operation = Literal["READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"]
Resource = Literal["topic", "group", "transactional_id"]
ACL_WAIT = 15.0


@dataclass(frozen=True, order=True)
class Grant:
    """`who` may do `operation` on a topic or group `name` (every name starting with it if
    `prefixed`)."""

    who: Role
    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


def grants(settings: Settings) -> list[Grant]:
    """Every ACL of the locker's principals on its topics and consumer groups."""
    t = Topics(settings.topic_prefix)
    every = [t.submissions, t.commands, t.events, t.anchors, t.verifications, t.verify_tasks, t.dlq]
    found: list[Grant] = []

    def allow(who: Role, topics: Iterable[str], *operations: Operation) -> None:
        found.extend(Grant(who, "topic", name, op) for name in topics for op in operations)

    allow("service", every, "READ", "DESCRIBE")
    allow("service", [t.events, t.anchors, t.dlq, t.verifications, t.verify_tasks], "WRITE")
    found.append(Grant("service", "group", settings.group_id, "READ", prefixed=True))
    # The leader's anchor writer is transactional so that a newer leader fences it
    # (`streams.anchoring.AnchorWriter`).
    writer = anchor_writer_id(settings)
    found += [Grant("service", "transactional_id", writer, op) for op in ("WRITE", "DESCRIBE")]
    allow("operator", every, "READ", "DESCRIBE", "DESCRIBE_CONFIGS")
    allow("operator", [t.commands, t.submissions], "WRITE")
    # Streaming consumers of verification outcomes read as the operator, in groups of their own.
    found.append(Grant("operator", "group", f"{settings.group_id}-reader", "READ", prefixed=True))
    allow("producer", [t.submissions], "WRITE", "DESCRIBE")
    allow("auditor", [t.events, t.anchors], "READ", "DESCRIBE")
    return sorted(found)


@dataclass(frozen=True)
class Setup:
    topics_created: list[str]
    acls: int  # ACLs in place for this locker (0: not set up here, see `acl_note`)
    acl_note: str


def set_up(settings: Settings) -> Setup:
    """Create the missing topics and, as the admin, the ACLs; see the module's doc."""
    from streams.kafka import create_topics

    auth = settings.kafka_auth()
    if not auth.sasl:
        created = asyncio.run(create_topics(settings))
        return Setup(created, 0, f"none: Kafka:SecurityProtocol is {auth.protocol}")
    if not kafka_auth.password_file(settings.kafka_credentials_path, "admin").exists():
        created = asyncio.run(create_topics(settings))
        note = "not set up: no admin password in Kafka:CredentialsPath; create them with the README's list"
        return Setup(created, 0, note)
    admin = settings.acting_as("admin")
    created = asyncio.run(create_topics(admin))
    wanted = grants(settings)
    create_acls(admin, wanted)
    return Setup(created, len(wanted), "")


def create_acls(admin: Settings, wanted: list[Grant]) -> None:
    """Create `wanted` as the admin and wait until the broker reports every one of them (ACLs are
    records in the metadata log, which the broker applies after the controller commits them)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    client = AdminClient(
        {"bootstrap.servers": admin.bootstrap, **admin.kafka_auth().librdkafka(), "log_level": 3}
    )
    try:
        for future in client.create_acls([_binding(admin, g) for g in wanted], request_timeout=15).values():
            future.result()
        deadline = time.monotonic() + ACL_WAIT
        while _missing(client, wanted):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"Kafka at {admin.bootstrap} did not apply the ACLs in {ACL_WAIT:.0f} s"
                )
            time.sleep(0.05)
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() in ("CLUSTER_AUTHORIZATION_FAILED", "SECURITY_DISABLED"):
            raise Refused(f"Kafka at {admin.bootstrap} refused to create ACLs: {error.str()}") from None
        raise BrokerUnavailable(f"Kafka at {admin.bootstrap}: {error.str()}") from None


def _missing(client: AdminClient, wanted: list[Grant]) -> bool:
    """Does the broker lack any of `wanted`? Asked once per resource."""
    from confluent_kafka.admin import AclBindingFilter

    by_resource = Counter((g.resource, g.name, g.prefixed) for g in wanted)
    for (resource, name, prefixed), count in by_resource.items():
        pattern = "PREFIXED" if prefixed else "LITERAL"
        # None: any principal, any host (the filter's stubs say str, its docs and code take None).
        query = AclBindingFilter(resource.upper(), name, pattern, None, None, "ANY", "ANY")  # type: ignore[arg-type]
        if len(client.describe_acls(query, request_timeout=15).result()) < count:
            return True
    return False


def _binding(admin: Settings, grant: Grant) -> AclBinding:
    from confluent_kafka.admin import AclBinding

    pattern = "PREFIXED" if grant.prefixed else "LITERAL"
    user = f"User:{admin.kafka_user(grant.who)}"
    return AclBinding(grant.resource.upper(), grant.name, pattern, user, "*", grant.operation, "ALLOW")
