"""What the sync and async clients share: URLs, bodies, answers."""

from __future__ import annotations

from typing import Any, Literal, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit
from uuid import UUID

import httpx
from pydantic import BaseModel, ValidationError

from . import errors

DEFAULT_URL = "http://127.0.0.1:7077"
USER_AGENT = "swarm-client-python/0.1.0"

Model = TypeVar("Model", bound=BaseModel)


def signal_body(
    kind: str,
    payload: dict[str, Any],
    correlation_id: UUID | str | None,
    trace_id: UUID | str | None,
    partition_key: str | None,
    encoding: Literal["json", "msgpack"] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "payload": payload}
    for name, value in (
        ("correlation_id", correlation_id),
        ("trace_id", trace_id),
        ("partition_key", partition_key),
        ("encoding", encoding),
    ):
        if value is not None:
            body[name] = str(value)
    return body


def request_params(wait: float, reply: str | None) -> dict[str, str]:
    if not wait > 0:
        raise ValueError(f"wait must be more than 0 seconds, not {wait}")
    params = {"wait": repr(float(wait))}
    if reply is not None:
        params["reply"] = reply
    return params


def search_body(
    text: str | None,
    signal: dict[str, Any] | None,
    kind: str | None,
    unit: str | None,
    outcome: Literal["success", "failure"] | None,
    k: int | None,
    fusion: Literal["hybrid", "vector"] | None,
) -> dict[str, Any]:
    if (text is None) == (signal is None):
        raise ValueError("give exactly one of text and signal")
    body: dict[str, Any] = {"text": text} if text is not None else {"signal": signal}
    for name, value in (
        ("kind", kind),
        ("unit", unit),
        ("outcome", outcome),
        ("k", k),
        ("fusion", fusion),
    ):
        if value is not None:
            body[name] = value
    return body


def conversation_path(execution: UUID | str | None, signal: UUID | str | None) -> str:
    if (execution is None) == (signal is None):
        raise ValueError("give exactly one of execution and signal")
    if execution is not None:
        return f"/v1/executions/{execution}/conversation"
    return f"/v1/signals/{signal}/conversation"


def live_url(base_url: str, kind: str | None, unit: str | None, events: str | None) -> str:
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = {
        name: value
        for name, value in (("kind", kind), ("unit", unit), ("events", events))
        if value is not None
    }
    path = parts.path.rstrip("/") + "/v1/live"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def headers(token: str | None) -> dict[str, str]:
    out = {"user-agent": USER_AGENT, "accept": "application/json"}
    if token is not None:
        out["authorization"] = f"Bearer {token}"
    return out


def check(response: httpx.Response) -> Any:
    """The answer's JSON; an error answer raised as its exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        raise errors.from_response(response.status_code, body, response.headers.get("retry-after"))
    if body is None:
        raise errors.TransportError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} without JSON"
        )
    return body


def parse(model: type[Model], body: Any) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise errors.TransportError(f"unexpected answer from the server: {error}") from error


def parse_list(model: type[Model], body: Any) -> list[Model]:
    if not isinstance(body, list):
        raise errors.TransportError(f"expected a list from the server, got {type(body).__name__}")
    return [parse(model, item) for item in body]


def websocket_error(
    status: int, body: bytes | bytearray, retry_after: str | None
) -> errors.ApiError:
    import json

    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return errors.from_response(status, parsed, retry_after)
