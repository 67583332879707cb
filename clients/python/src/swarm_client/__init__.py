"""A Python client of swarm: emit signals and wait for replies, watch the live mesh, search
what units did by similarity, list and manage units.

```python
from swarm_client import Client

with Client("http://127.0.0.1:7077") as swarm:
    answer = swarm.request("order.placed", {"id": 1, "items": [{"sku": "tea", "qty": 1}]},
                           reply="order.fulfilled")
    print(answer.reply.payload if answer.reply else answer.executions)
```
"""

from ._client import AsyncClient, Client
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NoReply,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    SwarmError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from .models import (
    Conversation,
    Execution,
    ExecutionEvent,
    ExecutionNode,
    Failure,
    Health,
    Lagged,
    Posted,
    Replied,
    Signal,
    SignalEvent,
    SignalNode,
    SimilarHit,
    Success,
    UnitStatus,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Conversation",
    "Execution",
    "ExecutionEvent",
    "ExecutionNode",
    "Failure",
    "Forbidden",
    "Health",
    "Lagged",
    "NoReply",
    "NotFound",
    "PayloadTooLarge",
    "Posted",
    "RateLimited",
    "Replied",
    "ServerError",
    "Signal",
    "SignalEvent",
    "SignalNode",
    "SimilarHit",
    "Success",
    "SwarmError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnitStatus",
    "Unprocessable",
]
