import asyncio

import pytest
from channels.layers import channel_layers, get_channel_layer

from monitoring import broadcast


def test_merge_keeps_everything_and_drops_what_was_deleted():
    merged = broadcast.merge(
        [
            broadcast.event(changed=[1, 2], announce={1: "active"}),
            broadcast.event(changed=[3], created=True),
            broadcast.event(deleted=[2]),
        ]
    )
    assert merged["changed"] == [1, 3] and merged["deleted"] == [2]
    assert merged["created"] is True and merged["announce"] == {"1": "active"}
    assert merged["id"] and merged["type"] == "machines.changed"


@pytest.mark.redis
def test_a_burst_of_registrations_reaches_a_dashboard_as_few_merged_events(require_redis):
    channel_layers.backends.clear()
    layer = get_channel_layer()

    async def subscribe():
        channel = await layer.new_channel()
        await layer.group_add(broadcast.GROUP, channel)
        return channel

    channel = asyncio.run(subscribe())
    for pk in range(1, 101):
        broadcast._send_now(broadcast.event(changed=[pk], created=True))

    async def collect():
        received = []
        while sum(len(message["changed"]) for message in received) < 100:
            received.append(await asyncio.wait_for(layer.receive(channel), 10))
        await layer.group_discard(broadcast.GROUP, channel)
        return received

    received = asyncio.run(collect())
    assert sorted(pk for message in received for pk in message["changed"]) == list(range(1, 101))
    assert len(received) < 20
    channel_layers.backends.clear()
