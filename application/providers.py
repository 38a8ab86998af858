"""What the composition root hands a use case: some collaborators are built asynchronously
(they need the node's or LND's session), so a factory may return an awaitable."""
from __future__ import annotations

import inspect
from typing import Any


async def resolved(value: Any) -> Any:
    """`value`, awaited first when it is awaitable."""
    return await value if inspect.isawaitable(value) else value
