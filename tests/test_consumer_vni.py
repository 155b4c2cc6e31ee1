"""The dashboard socket of a page filtered by VNI: it refreshes for changes in its VNI only, and its counts."""

import json

import pytest
from asgiref.sync import sync_to_async

from machines.models import Machine
from monitoring import broadcast
from tests.test_consumer import connect, session_cookie  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True)]

make = sync_to_async(lambda **fields: Machine.objects.create(mac_address="02:00:00:00:00:01", **fields))


async def show(communicator, *machines, vni: str) -> None:
    view = {"visible": ",".join(str(m.pk) for m in machines), "status": "", "q": "", "page": "1", "vni": vni}
    await communicator.send_to(text_data=json.dumps(view))
    await communicator.receive_nothing(0.1)  # let the consumer store the view


async def test_a_page_of_one_vni_refreshes_for_its_vni_only(layer, session_cookie):  # noqa: F811
    shown = await make(hostname="a", ip_address="10.0.0.5", status="active", vni=100)
    same_vni = await make(hostname="b", ip_address="10.0.0.6", status="unreachable", vni=100)
    other_vni = await make(hostname="c", ip_address="10.0.0.7", status="unreachable", vni=200)
    communicator, connected = await connect(session_cookie)
    assert connected
    try:
        await show(communicator, shown, vni=" 0100")  # canonical on the server's side
        await broadcast.push(broadcast.event(changed=[other_vni.pk], announce={other_vni.pk: "unreachable"}))
        html = await communicator.receive_from(timeout=5)
        assert 'data-refresh="true"' not in html
        # The changed machine's VNI's counts, swapped in by id wherever this page shows them.
        assert '<span id="vni-200">VNI 200: 1 machine, ' in html
        await broadcast.push(broadcast.event(changed=[same_vni.pk], announce={same_vni.pk: "unreachable"}))
        html = await communicator.receive_from(timeout=5)
        assert 'data-refresh="true"' in html
    finally:
        await communicator.disconnect()
