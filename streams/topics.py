"""Topic names (with the configurable prefix) and the configs `stella init` creates them with."""

from __future__ import annotations

from dataclasses import dataclass

from locker.config import Settings, max_message_bytes

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def submissions(self) -> str:
        return self.prefix + "evidence.submissions"

    @property
    def commands(self) -> str:
        return self.prefix + "evidence.commands"

    @property
    def events(self) -> str:
        return self.prefix + "evidence.events"

    @property
    def anchors(self) -> str:
        return self.prefix + "evidence.anchors"

    @property
    def verifications(self) -> str:
        return self.prefix + "evidence.verifications"

    @property
    def verify_tasks(self) -> str:
        """Internal: the plans of verification runs, cut into tasks for the verify loop."""
        return self.prefix + "evidence.verify-tasks"

    @property
    def dlq(self) -> str:
        return self.prefix + "evidence.dlq"


def anchor_writer_id(settings: Settings) -> str:
    """The transactional id that the leader of this locker's workers writes anchors under."""
    return f"{settings.group_id}-anchor-writer"


def specs(settings: Settings) -> list[TopicSpec]:
    """Every topic with explicit configs. The events and anchors topics never expire."""
    topics = Topics(settings.topic_prefix)
    parts = settings.partitions
    big = str(max_message_bytes(settings.max_content_bytes))
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

    def finite(days: int) -> dict[str, str]:
        return {"retention.ms": str(days * DAY_MS), "cleanup.policy": "delete"}

    return [
        TopicSpec(topics.submissions, parts, finite(7) | {"max.message.bytes": big}),
        TopicSpec(topics.commands, parts, finite(7)),
        TopicSpec(topics.events, parts, forever),
        TopicSpec(topics.anchors, 1, forever),
        TopicSpec(topics.verifications, parts, finite(30)),
        TopicSpec(topics.verify_tasks, parts, finite(7)),
        TopicSpec(topics.dlq, 1, finite(30) | {"max.message.bytes": big}),
    ]
