"""What the API sends and takes, as typed models (pydantic).

Every model accepts fields it does not know, so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Signal(_Model):
    """A typed message on the mesh."""

    id: UUID
    kind: str
    payload: Any
    correlation_id: UUID
    """The conversation it belongs to; replies carry it."""
    trace_id: UUID
    created_at: datetime
    attempt: int = 0
    """How many times it has been handed to a unit before."""
    parent_execution: UUID | None = None
    """The execution that emitted it, if a unit did."""
    partition_key: str | None = None


class Success(_Model):
    """The unit handled the signal."""

    status: Literal["success"]


class Failure(_Model):
    """The unit did not handle the signal."""

    status: Literal["failure"]
    kind: str
    """`error`, `panic`, `bad_output`, `unavailable`, `timeout`, ..."""
    error: str


Outcome = Annotated[Success | Failure, Field(discriminator="status")]


class Execution(_Model):
    """One unit's handling of one signal, as memory keeps it."""

    id: UUID
    signal: Signal
    unit: str
    unit_version: str
    generation: int
    attempt: int
    outcome: Outcome
    started_at: datetime
    latency_us: int
    policy: str
    propensity: float
    emitted: list[UUID] = []
    """Ids of the signals it emitted."""
    host_calls: list[dict[str, Any]] = []

    @property
    def succeeded(self) -> bool:
        return isinstance(self.outcome, Success)


class Posted(_Model):
    """A signal accepted onto the mesh."""

    id: UUID
    correlation_id: UUID
    entry: str
    """Its mesh entry id."""


class Replied(_Model):
    """A signal accepted onto the mesh and what answered it.

    `reply` is the first signal of the conversation that followed (of the asked kind); when
    the conversation settled without one, it is `None` and `executions` lists what ran.
    """

    id: UUID
    correlation_id: UUID
    entry: str
    reply: Signal | None = None
    executions: list[Execution] = []


class SimilarHit(_Model):
    """An execution found by a similarity search."""

    similarity: float
    """Cosine similarity of the probe and the execution's signal shape (1 is identical)."""
    score: float
    """The fused rank score hits are ordered by."""
    shape: str
    """The signal shape that matched."""
    execution: Execution


class SignalNode(_Model):
    """A signal of a conversation and the executions that handled it."""

    id: UUID
    signal: Signal | None = None
    """None for a signal no unit took (memory knows it by id, from its emitter)."""
    executions: list[ExecutionNode] = []


class ExecutionNode(_Model):
    """An execution of a conversation and the signals it emitted."""

    execution: Execution
    emitted: list[SignalNode] = []


class Conversation(_Model):
    """A conversation from memory, as a tree from the signal that started it."""

    correlation_id: UUID
    focus: UUID
    """The signal asked about, or the one whose execution was."""
    focus_execution: UUID | None = None
    root: SignalNode
    complete: bool
    """Whether `root` started the conversation (memory still had its whole lineage)."""
    truncated: bool

    def executions(self) -> list[Execution]:
        """Every execution of the tree, depth first."""
        found: list[Execution] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            for child in reversed(node.executions):
                found.append(child.execution)
                stack.extend(reversed(child.emitted))
        return found


class UnitStatus(_Model):
    """A loaded unit."""

    name: str
    version: str
    generation: int
    state: str
    """`ready`, `disabled`, `quarantined`, ..."""
    subscribes: list[str]
    emits: list[str]
    dispatch: dict[str, Any]
    file: str
    isolated: bool = False
    last_error: str | None = None
    stuck_calls: int = 0
    timeouts: int = 0


class Health(_Model):
    """`GET /v1/health`."""

    status: str
    """`ok`, or `degraded` (`problems` says why)."""
    tokens: bool
    problems: list[dict[str, Any]] = []
    recording: dict[str, Any] | None = None
    mesh: dict[str, Any] | None = None


class SignalEvent(_Model):
    """A signal appended to the mesh (or to its dead letters)."""

    type: Literal["signal"]
    entry: str
    dead_letter: bool
    signal: Signal


class ExecutionEvent(_Model):
    """A unit handled a signal."""

    type: Literal["execution"]
    execution: Execution


class Lagged(_Model):
    """The watcher fell behind and missed this many events."""

    type: Literal["lagged"]
    missed: int


LiveEvent = Annotated[SignalEvent | ExecutionEvent | Lagged, Field(discriminator="type")]

SignalNode.model_rebuild()

LIVE_EVENT: TypeAdapter[SignalEvent | ExecutionEvent | Lagged] = TypeAdapter(LiveEvent)
