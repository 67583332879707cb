"""The client against a real `swarm up` (see conftest.py): every call, both flavours, and the
API's errors as exceptions."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

import swarm_client
from swarm_client import AsyncClient, Client, ExecutionEvent, SignalEvent

from .conftest import order


def test_emit_puts_a_signal_on_the_mesh(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        posted = swarm.emit("order.placed", order(1))
        assert posted.correlation_id == posted.id
        assert posted.entry
        key = str(uuid.uuid4())
        joined = swarm.emit("order.placed", order(2), correlation_id=key, partition_key="p")
        assert str(joined.correlation_id) == key and joined.id != joined.correlation_id


def test_request_answers_with_the_reply_kind_asked_for(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        first = swarm.request("order.placed", order(3), wait=10)
        assert first.reply is not None and first.reply.kind == "order.validated"
        fulfilled = swarm.request("order.placed", order(4), reply="order.fulfilled", wait=10)
        assert fulfilled.reply is not None
        assert fulfilled.reply.kind == "order.fulfilled"
        assert fulfilled.reply.correlation_id == fulfilled.correlation_id
        assert fulfilled.reply.payload["id"] == 4


def test_a_conversation_settled_without_the_reply_answers_with_what_ran(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        answer = swarm.request("order.placed", order(5), reply="order.refunded", wait=20)
    # Not a NoReply after the whole wait: the conversation settled, and says what ran.
    assert answer.reply is None
    kinds = {execution.signal.kind for execution in answer.executions}
    assert "order.placed" in kinds, answer.executions
    assert all(e.signal.correlation_id == answer.correlation_id for e in answer.executions)
    assert all(e.succeeded for e in answer.executions)


def test_async_client_emits_requests_and_streams_the_live_mesh(swarm_url: str) -> None:
    async def run() -> None:
        async with AsyncClient(swarm_url) as swarm:
            answer = await swarm.request("order.placed", order(6), reply="order.priced")
            assert answer.reply is not None and answer.reply.kind == "order.priced"
            posted: set[uuid.UUID] = set()

            async def keep_emitting() -> None:
                # The live stream starts at the moment it connects: emit until it sees one.
                while True:
                    posted.add((await swarm.emit("order.placed", order(7))).correlation_id)
                    await asyncio.sleep(0.2)

            emitter = asyncio.create_task(keep_emitting())
            seen_signal = seen_execution = False
            try:
                async with asyncio.timeout(30):
                    async for event in swarm.live(kind="order.*"):
                        if isinstance(event, SignalEvent):
                            assert event.signal.kind.startswith("order.")
                            seen_signal |= event.signal.correlation_id in posted
                        elif isinstance(event, ExecutionEvent):
                            seen_execution |= event.execution.signal.correlation_id in posted
                        if seen_signal and seen_execution:
                            break
            finally:
                emitter.cancel()
            assert seen_signal and seen_execution

    asyncio.run(run())


def test_blocking_live_stream_filters_by_unit(swarm_url: str) -> None:
    stop = threading.Event()

    def keep_emitting() -> None:
        with Client(swarm_url) as emitter:
            while not stop.is_set():
                emitter.emit("order.placed", order(8))
                time.sleep(0.2)

    thread = threading.Thread(target=keep_emitting)
    thread.start()
    try:
        with Client(swarm_url) as swarm:
            events = swarm.live(unit="order-price", events="executions")
            for _ in range(3):
                event = next(events)
                assert isinstance(event, ExecutionEvent), event
                assert event.execution.unit == "order-price"
            events.close()
    finally:
        stop.set()
        thread.join()


def test_similarity_search_and_executions_by_id(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        swarm.request("order.placed", order(9), reply="order.fulfilled", wait=10)
        deadline = time.monotonic() + 30
        hits: list[swarm_client.SimilarHit] = []
        while not hits and time.monotonic() < deadline:
            # Memory records behind a queue: the executions arrive there shortly after.
            hits = swarm.similar(
                "an order was placed", kind="order.placed", unit="order-validate", k=3
            )
            time.sleep(0.2)
        assert hits, "memory found no execution of order-validate"
        assert len(hits) <= 3
        assert all(hit.execution.unit == "order-validate" for hit in hits)
        assert all(hit.execution.signal.kind == "order.placed" for hit in hits)
        assert hits == sorted(hits, key=lambda hit: -hit.score)
        execution = swarm.execution(hits[0].execution.id)
        assert execution == hits[0].execution
        by_signal = swarm.similar(signal={"kind": "order.placed", "payload": order(9)}, k=1)
        assert len(by_signal) == 1


def test_a_conversation_is_a_tree_from_memory(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        answer = swarm.request("order.placed", order(11), reply="order.fulfilled", wait=10)
        assert answer.reply is not None and answer.reply.parent_execution is not None
        fulfilment = answer.reply.parent_execution
        deadline = time.monotonic() + 30
        while True:
            # Memory records behind a queue: wait until it has the fulfilment.
            try:
                tree = swarm.conversation(execution=fulfilment)
                break
            except swarm_client.NotFound:
                assert time.monotonic() < deadline, "memory never had the fulfilment"
                time.sleep(0.2)
        assert tree.complete and not tree.truncated
        assert tree.correlation_id == answer.correlation_id
        assert tree.focus_execution == fulfilment
        assert tree.root.signal is not None and tree.root.signal.kind == "order.placed"
        units = [execution.unit for execution in tree.executions()]
        assert units[:2] == ["order-validate", "order-price"], units
        assert units[2] in ("fulfil-express", "fulfil-standard"), units
        # The fulfilment emitted the reply, which no unit took.
        last = tree.root.executions[0].emitted[0].executions[0].emitted[0].executions[-1]
        assert last.execution.id == fulfilment
        assert [node.id for node in last.emitted] == [answer.reply.id]
        assert last.emitted[0].signal is None
        by_signal = swarm.conversation(signal=answer.id)
        assert by_signal.root == tree.root and by_signal.focus_execution is None
        with pytest.raises(ValueError):
            swarm.conversation()


def test_units_are_listed_disabled_and_enabled(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        units = {unit.name: unit for unit in swarm.units()}
        assert {"order-validate", "order-price", "fulfil-express", "fulfil-standard"} <= set(units)
        assert units["order-price"].subscribes == ["order.validated"]
        assert units["order-price"].emits == ["order.priced"]
        assert swarm.disable_unit("fulfil-express").state == "disabled"
        assert swarm.enable_unit("fulfil-express").state == "ready"
        assert swarm.health().status == "ok"


def test_api_errors_are_exceptions_with_their_codes(swarm_url: str) -> None:
    with Client(swarm_url) as swarm:
        with pytest.raises(swarm_client.Unprocessable) as broken:
            swarm.emit("order.placed", {"id": "not a number", "items": []})
        assert broken.value.status == 422 and broken.value.details
        with pytest.raises(swarm_client.Unprocessable) as bad_kind:
            swarm.emit("Not A Kind!", {})
        assert bad_kind.value.code == "bad_kind" and "Not A Kind!" in bad_kind.value.message
        with pytest.raises(swarm_client.BadRequest) as too_long:
            swarm.request("order.placed", order(10), wait=100_000)
        assert too_long.value.code == "bad_query"
        with pytest.raises(swarm_client.NotFound) as missing:
            swarm.execution(uuid.uuid4())
        assert missing.value.code == "unknown_execution"
        with pytest.raises(swarm_client.NotFound):
            swarm.disable_unit("no-such-unit")
        with pytest.raises(ValueError):
            swarm.similar()

    async def bad_live() -> None:
        async with AsyncClient(swarm_url) as swarm:
            async for _ in swarm.live(events="everything"):  # type: ignore[arg-type]
                pass

    with pytest.raises(swarm_client.BadRequest) as bad_filter:
        asyncio.run(bad_live())
    assert bad_filter.value.code == "bad_query"


def test_an_unreachable_server_is_a_transport_error() -> None:
    with (
        socket_closed_port() as port,
        Client(f"http://127.0.0.1:{port}", timeout=2) as swarm,
        pytest.raises(swarm_client.TransportError),
    ):
        swarm.health()


class socket_closed_port:
    """A loopback port nothing listens on, for the length of the block."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self._socket.close()
