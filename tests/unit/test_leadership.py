"""The commands group's assignor: every partition to one member, kept by the leader while it stays."""

from __future__ import annotations

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from streams.leadership import LEADING, OneOwner, choose_owner


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}


def test_the_earlier_leader_keeps_leading_when_a_worker_joins() -> None:
    assert choose_owner({"b-member": LEADING, "a-member": b""}) == "b-member"


def test_without_a_leader_the_smallest_member_id_leads() -> None:
    assert choose_owner({"b-member": b"", "a-member": b""}) == "a-member"


def test_after_a_split_group_one_of_the_claimants_leads() -> None:
    assert choose_owner({"c": LEADING, "b": LEADING, "a": b""}) == "b"


def test_one_member_gets_every_partition_and_the_others_none() -> None:
    assignor = OneOwner()
    assignor.leading = True
    members = {
        "x": assignor.metadata(["commands"]),
        "w": ConsumerProtocolMemberMetadata(0, ["commands"], b""),
    }
    assigned = OneOwner.assign(Cluster(), members)
    assert assigned["x"].assignment == [("commands", [0, 1, 2])]
    assert assigned["w"].assignment == []
