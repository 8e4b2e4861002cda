"""Trials that take the broker away under a steady ingest: killed (SIGKILL) and restarted, stopped
(SIGSTOP) for `PAUSE` seconds and resumed, and one broker of a three-broker cluster killed.
"Detected": while the fault lasted, /healthz (polled every 250 ms) said `degraded` or `failed` (a
loop retrying or failed) at least once, or `stella doctor --check check.kafka.broker` failed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

from commands import access, doctor, service
from commands.broker import LocalCluster, free_port, port_open
from locker.config import Settings
from streams.kafka import admin
from streams.topics import Topics
from tests.faults.checker import check
from tests.faults.lab import PAUSE, HealthWatch, Lab, Outcome, Sender, own_broker
from tests.integration.helpers import index_count, use_broker, wait_for


def _ingesting(settings: Settings) -> Sender:
    """The service started; a steady ingest to start (`with`) and wait for."""
    service.start(settings)
    return Sender(settings)


def _under_way(settings: Settings) -> None:
    wait_for(lambda: index_count(settings) >= 300, what="ingest to get going")


def _doctor(settings: Settings) -> tuple[bool, str]:
    """`stella doctor --check check.kafka.broker`: whether it failed, and its finding."""
    check = doctor.run(settings, check_id="check.kafka.broker").checks[0]
    return check.status == "fail", f"doctor: {check.status} ({check.finding[:80]})"


def _resumed(settings: Settings, since: int) -> None:
    wait_for(lambda: index_count(settings) >= since + 500, timeout=180, what="ingest to resume")


def broker_killed(lab: Lab) -> Outcome:
    """kill -9 of the only broker mid-ingest, restarted 3 s later."""
    with own_broker(lab) as (broker, settings), _ingesting(settings) as sender:
        _under_way(settings)
        with HealthWatch(settings).watching() as watch:
            broker.daemon.kill()  # at once: a clean shutdown takes long enough for ingest to finish
            began = time.monotonic()
            stopped_at = index_count(settings)
            failed, said = _doctor(settings)
            time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))
            broker.start()
            _resumed(settings, stopped_at)
        accepted = sender.finish()
        assert service.status(settings)["healthy"]
        verdict = check(settings, accepted, lab.tmp_path)
    note = f"{len(accepted)} acknowledged; /healthz: {watch.seen()}; {said}"
    return Outcome(1, int(watch.degraded or failed), verdict, note)


def broker_stopped(lab: Lab) -> Outcome:
    """The only broker stopped (SIGSTOP: its connections stay open, nothing answers) for `PAUSE`
    seconds mid-ingest, then resumed (SIGCONT)."""
    with own_broker(lab) as (broker, settings), _ingesting(settings) as sender:
        _under_way(settings)
        pid = broker.daemon.pid()
        assert pid is not None
        with HealthWatch(settings).watching() as watch:
            os.kill(pid, signal.SIGSTOP)
            began = time.monotonic()
            stopped_at = index_count(settings)
            try:
                time.sleep(PAUSE / 2)
                failed, said = _doctor(settings)
                time.sleep(max(0.0, PAUSE / 2 - 5.0))  # the doctor gives the broker 5 s at most
                during = index_count(settings)
            finally:
                os.kill(pid, signal.SIGCONT)
                stopped_for = time.monotonic() - began
            _resumed(settings, during)
        accepted = sender.finish()
        verdict = check(settings, accepted, lab.tmp_path)
    note = (
        f"stopped {stopped_for:.0f} s, {during - stopped_at} indexed then, {len(accepted)} acknowledged; "
        f"/healthz: {watch.seen()}; {said}"
    )
    return Outcome(1, int(watch.degraded or failed), verdict, note)


def _six_free_ports() -> tuple[int, int]:
    """A client port p and a controller port c with p, p+2, p+4 and c, c+2, c+4 all free."""
    while True:
        port = free_port()
        if all(not port_open("127.0.0.1", port + k) for k in range(6)):
            return port, port + 1


@contextlib.contextmanager
def _cluster(lab: Lab) -> Iterator[tuple[LocalCluster, Settings]]:
    port, controller = _six_free_ports()
    three = LocalCluster.of(
        lab.tmp_path / "cluster",
        3,
        port,
        controller,
        heap="256m",
        partitions=4,
        credentials=lab.tmp_path / "secrets",
    )
    three.start()
    try:
        settings = use_broker(lab.monkeypatch, three.bootstrap, three.nodes[0].client_env())
        access.set_up(settings)
        yield three, settings
    finally:
        for node in three.nodes:  # throwaway data: no clean shutdown to wait for
            node.daemon.kill()


async def _replication(settings: Settings) -> dict[str, tuple[int, str]]:
    """topic -> (replicas of its first partition, its min.insync.replicas)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topics = Topics(settings.topic_prefix)
    names = [topics.submissions, topics.events, topics.anchors, topics.dlq]
    async with admin(settings.acting_as("admin")) as client:
        described = {
            t["topic"]: len(t["partitions"][0]["replicas"]) for t in await client.describe_topics(names)
        }
        configs = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    insync = {
        name: dict((entry[0], entry[1]) for entry in entries)["min.insync.replicas"]
        for response in configs
        for _, _, _, name, entries in response.resources
    }
    return {name: (described[name], insync[name]) for name in names}


def cluster_broker_killed(lab: Lab) -> Outcome:
    """A three-broker cluster (#13 item 1): every topic has 3 replicas and `min.insync.replicas=2`,
    and ingest goes on when one broker (and controller) is killed."""
    with _cluster(lab) as (three, settings):
        assert set(asyncio.run(_replication(settings)).values()) == {(3, "2")}
        with _ingesting(settings) as sender:
            _under_way(settings)
            with HealthWatch(settings).watching() as watch:
                three.nodes[1].daemon.kill()
                failed, said = _doctor(settings)
                _resumed(settings, index_count(settings))
            accepted = sender.finish()
        verdict = check(settings, accepted, lab.tmp_path)
    note = f"{len(accepted)} acknowledged; /healthz: {watch.seen()}; {said}"
    return Outcome(1, int(watch.degraded or failed), verdict, note)
