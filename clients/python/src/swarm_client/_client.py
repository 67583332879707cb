"""`Client` (blocking) and `AsyncClient` (asyncio): the same calls, one over each."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import httpx
import websockets.asyncio.client
import websockets.exceptions
import websockets.sync.client
from typing_extensions import Self

from . import _base, errors
from .models import (
    LIVE_EVENT,
    Conversation,
    Execution,
    ExecutionEvent,
    Health,
    Lagged,
    Posted,
    Replied,
    SignalEvent,
    SimilarHit,
    UnitStatus,
)

Encoding = Literal["json", "msgpack"]
OutcomeFilter = Literal["success", "failure"]
Fusion = Literal["hybrid", "vector"]
Events = Literal["signals", "executions", "all"]
LiveEvent = SignalEvent | ExecutionEvent | Lagged


class AsyncClient:
    """A swarm's HTTP API, for asyncio.

    ```python
    async with AsyncClient("http://127.0.0.1:7077") as swarm:
        answer = await swarm.request("order.placed", {"id": 1, "items": [...]},
                                     reply="order.fulfilled")
        async for event in swarm.live(kind="order.*"):
            ...
    ```

    `token` is a bearer token of the server's API tokens file, when it has one. `timeout` is
    in seconds, for each call (a request's wait comes on top of it).
    """

    def __init__(
        self,
        base_url: str = _base.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_base.headers(token),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise errors.TransportError(f"{method} {self.base_url}{path}: {error}") from error
        return _base.check(response)

    async def emit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        correlation_id: UUID | str | None = None,
        trace_id: UUID | str | None = None,
        partition_key: str | None = None,
        encoding: Encoding | None = None,
    ) -> Posted:
        """Posts a signal onto the mesh and returns as soon as it is there."""
        body = _base.signal_body(kind, payload, correlation_id, trace_id, partition_key, encoding)
        return _base.parse(Posted, await self._call("POST", "/v1/signals", json=body))

    async def request(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        reply: str | None = None,
        wait: float = 5.0,
        correlation_id: UUID | str | None = None,
        trace_id: UUID | str | None = None,
        partition_key: str | None = None,
        encoding: Encoding | None = None,
    ) -> Replied:
        """Posts a signal and waits up to `wait` seconds for its reply: the first signal of
        its conversation, or with `reply` (a kind pattern, `order.fulfilled`, `order.*`) the
        first of that kind. A conversation that settles without one answers at once, with
        `reply` None and the executions that ran. Raises `NoReply` when the wait runs out."""
        body = _base.signal_body(kind, payload, correlation_id, trace_id, partition_key, encoding)
        answer = await self._call(
            "POST",
            "/v1/signals",
            json=body,
            params=_base.request_params(wait, reply),
            timeout=self._timeout + wait,
        )
        return _base.parse(Replied, answer)

    async def similar(
        self,
        text: str | None = None,
        *,
        signal: dict[str, Any] | None = None,
        kind: str | None = None,
        unit: str | None = None,
        outcome: OutcomeFilter | None = None,
        k: int | None = None,
        fusion: Fusion | None = None,
    ) -> list[SimilarHit]:
        """The executions whose signals are most like `text` (or like `signal`, given as
        `{"kind": ..., "payload": ...}`), best first."""
        body = _base.search_body(text, signal, kind, unit, outcome, k, fusion)
        answer = await self._call("POST", "/v1/executions/similar", json=body)
        return _base.parse_list(SimilarHit, answer)

    async def execution(self, id: UUID | str) -> Execution:
        """One execution from memory."""
        return _base.parse(Execution, await self._call("GET", f"/v1/executions/{id}"))

    async def conversation(
        self, *, execution: UUID | str | None = None, signal: UUID | str | None = None
    ) -> Conversation:
        """The conversation of an execution or of a signal, as a tree from memory."""
        path = _base.conversation_path(execution, signal)
        return _base.parse(Conversation, await self._call("GET", path))

    async def units(self) -> list[UnitStatus]:
        """The loaded units."""
        return _base.parse_list(UnitStatus, await self._call("GET", "/v1/units"))

    async def enable_unit(self, name: str) -> UnitStatus:
        """Enables a unit (needs the `admin` scope)."""
        return _base.parse(UnitStatus, await self._call("POST", f"/v1/units/{name}/enable"))

    async def disable_unit(self, name: str) -> UnitStatus:
        """Disables a unit: it gets no signals until enabled (needs the `admin` scope)."""
        return _base.parse(UnitStatus, await self._call("POST", f"/v1/units/{name}/disable"))

    async def health(self) -> Health:
        """Whether the swarm is well, and its backlog."""
        return _base.parse(Health, await self._call("GET", "/v1/health"))

    async def live(
        self,
        *,
        kind: str | None = None,
        unit: str | None = None,
        events: Events | None = None,
    ) -> AsyncGenerator[LiveEvent, None]:
        """The mesh as it happens: signals and executions (of kinds matching `kind`, of
        `unit`), from the moment of connecting, until the loop stops or the server closes."""
        url = _base.live_url(self.base_url, kind, unit, events)
        try:
            async with websockets.asyncio.client.connect(
                url,
                additional_headers=_base.headers(self._token),
                open_timeout=self._timeout,
                max_size=None,
            ) as socket:
                async for message in socket:
                    yield LIVE_EVENT.validate_json(message)
        except websockets.exceptions.InvalidStatus as refused:
            response = refused.response
            raise _base.websocket_error(
                response.status_code, response.body or b"", response.headers.get("retry-after")
            ) from refused
        except (OSError, websockets.exceptions.WebSocketException) as error:
            raise errors.TransportError(f"live stream {url}: {error}") from error


class Client:
    """A swarm's HTTP API, blocking: the calls of `AsyncClient`, for code without asyncio.

    ```python
    with Client("http://127.0.0.1:7077") as swarm:
        posted = swarm.emit("order.placed", {"id": 1, "items": [...]})
        for event in swarm.live(kind="order.*"):
            ...
    ```
    """

    def __init__(
        self,
        base_url: str = _base.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_base.headers(token),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise errors.TransportError(f"{method} {self.base_url}{path}: {error}") from error
        return _base.check(response)

    def emit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        correlation_id: UUID | str | None = None,
        trace_id: UUID | str | None = None,
        partition_key: str | None = None,
        encoding: Encoding | None = None,
    ) -> Posted:
        """See `AsyncClient.emit`."""
        body = _base.signal_body(kind, payload, correlation_id, trace_id, partition_key, encoding)
        return _base.parse(Posted, self._call("POST", "/v1/signals", json=body))

    def request(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        reply: str | None = None,
        wait: float = 5.0,
        correlation_id: UUID | str | None = None,
        trace_id: UUID | str | None = None,
        partition_key: str | None = None,
        encoding: Encoding | None = None,
    ) -> Replied:
        """See `AsyncClient.request`."""
        body = _base.signal_body(kind, payload, correlation_id, trace_id, partition_key, encoding)
        answer = self._call(
            "POST",
            "/v1/signals",
            json=body,
            params=_base.request_params(wait, reply),
            timeout=self._timeout + wait,
        )
        return _base.parse(Replied, answer)

    def similar(
        self,
        text: str | None = None,
        *,
        signal: dict[str, Any] | None = None,
        kind: str | None = None,
        unit: str | None = None,
        outcome: OutcomeFilter | None = None,
        k: int | None = None,
        fusion: Fusion | None = None,
    ) -> list[SimilarHit]:
        """See `AsyncClient.similar`."""
        body = _base.search_body(text, signal, kind, unit, outcome, k, fusion)
        return _base.parse_list(SimilarHit, self._call("POST", "/v1/executions/similar", json=body))

    def execution(self, id: UUID | str) -> Execution:
        """See `AsyncClient.execution`."""
        return _base.parse(Execution, self._call("GET", f"/v1/executions/{id}"))

    def conversation(
        self, *, execution: UUID | str | None = None, signal: UUID | str | None = None
    ) -> Conversation:
        """See `AsyncClient.conversation`."""
        path = _base.conversation_path(execution, signal)
        return _base.parse(Conversation, self._call("GET", path))

    def units(self) -> list[UnitStatus]:
        """See `AsyncClient.units`."""
        return _base.parse_list(UnitStatus, self._call("GET", "/v1/units"))

    def enable_unit(self, name: str) -> UnitStatus:
        """See `AsyncClient.enable_unit`."""
        return _base.parse(UnitStatus, self._call("POST", f"/v1/units/{name}/enable"))

    def disable_unit(self, name: str) -> UnitStatus:
        """See `AsyncClient.disable_unit`."""
        return _base.parse(UnitStatus, self._call("POST", f"/v1/units/{name}/disable"))

    def health(self) -> Health:
        """See `AsyncClient.health`."""
        return _base.parse(Health, self._call("GET", "/v1/health"))

    def live(
        self,
        *,
        kind: str | None = None,
        unit: str | None = None,
        events: Events | None = None,
    ) -> Generator[LiveEvent, None, None]:
        """See `AsyncClient.live`; stop iterating (or `close()` the generator) to disconnect."""
        url = _base.live_url(self.base_url, kind, unit, events)
        try:
            with websockets.sync.client.connect(
                url,
                additional_headers=_base.headers(self._token),
                open_timeout=self._timeout,
                max_size=None,
            ) as socket:
                for message in socket:
                    yield LIVE_EVENT.validate_json(message)
        except websockets.exceptions.InvalidStatus as refused:
            response = refused.response
            raise _base.websocket_error(
                response.status_code, response.body or b"", response.headers.get("retry-after")
            ) from refused
        except (OSError, websockets.exceptions.WebSocketException) as error:
            raise errors.TransportError(f"live stream {url}: {error}") from error
