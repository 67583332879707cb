"""Exceptions: every error the API answers with, by status, carrying its stable code."""

from __future__ import annotations

from typing import Any


class SwarmError(Exception):
    """Everything this client raises."""


class TransportError(SwarmError):
    """The server could not be reached, or the connection broke."""


class ApiError(SwarmError):
    """The server answered with an error (an `ErrorBody`).

    `code` is the API's stable machine-readable code (`bad_json`, `missing_scope`,
    `no_reply`, ...); `details` lists each problem where there were several (schema
    violations, with their paths); `retry_after` is the seconds the server asked to wait, if
    it said.
    """

    status: int
    code: str
    message: str
    details: list[str]
    retry_after: float | None

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: malformed JSON, options or query."""


class Unauthorized(ApiError):
    """401: a token is needed, or the one given is not known."""


class Forbidden(ApiError):
    """403: the token lacks the scope, or the origin is not allowed."""


class NotFound(ApiError):
    """404: no such endpoint, execution or unit."""


class Conflict(ApiError):
    """409: the unit refused (its `on_enable` failed)."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server takes."""


class Unprocessable(ApiError):
    """422: the signal breaks a schema; `details` names each violation."""


class RateLimited(ApiError):
    """429: too many requests, waiting posts or watchers from this client."""


class ServerError(ApiError):
    """500: the server failed to answer."""


class Unavailable(ApiError):
    """503: the mesh or memory cannot be reached, or the server is full; try again later."""


class NoReply(ApiError):
    """504: the signal was posted, but nothing replied within the wait."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
    500: ServerError,
    503: Unavailable,
    504: NoReply,
}


def from_response(status: int, body: Any, retry_after: str | None) -> ApiError:
    """The exception for an error answer: its `ErrorBody` when the body is one."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code = str(detail.get("code", f"http_{status}"))
        message = str(detail.get("message", ""))
        details = [str(d) for d in detail.get("details", [])]
    else:
        code, message, details = f"http_{status}", f"the server answered {status}", []
    try:
        wait = float(retry_after) if retry_after is not None else None
    except ValueError:
        wait = None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, code, message, details, wait)
