"""asyncio helpers of the tests that talk to the broker with aiokafka directly.

No async pytest plugin is assumed: a test runs its coroutine with run().
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def run(coro, timeout: float = 30):
    """Run one test coroutine, failing (not hanging) after *timeout* seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_for(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    """Await *predicate* until it returns something true; AssertionError after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int = 1,
                       configs: dict | None = None) -> None:
    """Create *name* and wait until each of its partitions has a leader (the dev
    broker is node 1), as dnpfs's mkfifo does."""
    resp = await admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1,
                  topic_configs=configs or {})]
    )
    errors = resp.to_object()["topic_errors"]
    assert [(e["topic"], e["error_code"]) for e in errors] == [(name, 0)], errors

    async def has_leaders():
        [desc] = await admin.describe_topics([name])
        return (desc["error_code"] == 0 and len(desc["partitions"]) == partitions
                and all(p["leader"] == 1 for p in desc["partitions"]))

    await wait_for(has_leaders, 10, f"topic {name} to have a leader")


async def create_topic_at(bootstrap: str, name: str) -> None:
    """create_topic() through an admin client of its own."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await create_topic(admin, name)
    finally:
        await admin.close()


_SHARE_GROUPS: dict[str, bool] = {}


def has_share_groups(bootstrap: str) -> bool:
    """Does the broker at *bootstrap* serve share groups as dnpfs speaks them
    (Kafka 4.2 and later)?  Then a pipe's default group is a share group."""
    if bootstrap not in _SHARE_GROUPS:
        from aiokafka import AIOKafkaClient
        from aiokafka.protocol.admin import ApiVersionRequest

        from dnpfs.backends.kafka._aiokafka.share_requests import supported

        async def ask() -> bool:
            client = AIOKafkaClient(bootstrap_servers=bootstrap)
            await client.bootstrap()
            try:
                response = await client.send(client.get_random_node(), ApiVersionRequest())
                return supported({k: (lo, hi) for k, lo, hi, *_ in response.api_versions})
            finally:
                await client.close()

        _SHARE_GROUPS[bootstrap] = run(ask())
    return _SHARE_GROUPS[bootstrap]


def whole_records(backend_args: list[str]) -> bool:
    """Does the default group of a mount with *backend_args* keep records
    whole and give back what a killed reader took (docs/semantics.md, "Work
    queues")?  The embedded store: yes; Kafka: on a broker that has share
    groups, unless --share-groups never."""
    if "--kafka" not in backend_args:
        return True
    if "--share-groups" in backend_args and \
            backend_args[backend_args.index("--share-groups") + 1] == "never":
        return False  # the consumer group's hand-over
    return has_share_groups(backend_args[backend_args.index("--kafka") + 1])
