"""What every route module shares: the request as a handler sees it (`Call`), the `route`
decorator that declares a route beside its handler, the table they fill (`ROUTES`), the scopes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import attrs

from kaccy_bitcoin.adapters.http_api.fields import Field, Fields, obj
from kaccy_bitcoin.adapters.http_api.requests import Inputs
from kaccy_bitcoin.domain.payment_state import PaymentState

if TYPE_CHECKING:
    from aiohttp import web

    from kaccy_bitcoin.adapters.http_api.app import Api
    from kaccy_bitcoin.domain.api_access import ApiKey
    from kaccy_bitcoin.ports.service_store import IdempotencyReceipt

READ, ORDERS, WITHDRAW, ADMIN = "read", "orders", "withdraw", "admin"


@attrs.define
class Call:
    """One request as a handler sees it."""

    request: web.Request
    body: Inputs     # the body's fields, checked
    args: Inputs     # the query's fields, checked
    key: ApiKey | None
    api: Api
    # The Idempotency-Key as the use case writes it in its own units of work (see Route.receipt).
    receipt: IdempotencyReceipt | None = None

    def path(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def query(self) -> Any:
        return self.request.query

    async def use(self, name: str) -> Any:
        """The container's use case `name` (see bootstrap/container.py Services)."""
        return await self.api.use_cases(name)


@attrs.frozen
class Created:
    """A handler's answer that made something: 201."""

    body: dict[str, Any]


@attrs.frozen
class Route:
    method: str
    path: str
    handler: Callable[[Call], Awaitable[Any]]
    summary: str
    tag: str
    scopes: tuple[str, ...] | None
    idempotency: str | None = None          # "required", "optional" or None
    body: Fields | None = None              # the request body's fields (None: no body)
    query: tuple[tuple[str, Field], ...] = ()
    status: int = 200
    websocket: bool = False
    content_type: str = "application/json"  # of the success answer
    answers: tuple[tuple[int, str], ...] = ()   # other statuses answered with the success's body
    links: tuple[tuple[str, str], ...] = ()     # (operationId, path parameter) the answer's same field fills
    path_patterns: tuple[tuple[str, str], ...] = ()   # (path parameter, regex its value matches)
    # A protocol of its own (BIP78's /pj): a text/plain body the handler reads itself (this
    # describes it), and the error statuses it answers with their body's schema, instead of ours.
    text_body: Field | None = None
    errors: tuple[tuple[int, str], ...] = ()
    error_schema: dict[str, Any] | None = None
    # For a body it is true of, the handler passes `call.receipt` to a use case that claims and
    # answers the Idempotency-Key in its own units of work (else the key is claimed first).
    receipt: Callable[[Inputs], bool] | None = None

    @property
    def router_path(self) -> str:
        """The path as the router matches it: a parameter with a pattern matches only that, so a
        fixed path beside it (`/v1/swaps/accept` beside `/v1/swaps/{swap_id}`) is not taken for
        the parameter's value, and a method the fixed path does not list is a 405, as documented."""
        path = self.path
        for name, pattern in self.path_patterns:
            path = path.replace(f"{{{name}}}", f"{{{name}:{pattern}}}")
        return path


ROUTES: list[Route] = []
Handler = Callable[[Call], Awaitable[Any]]


def route(method: str, path: str, summary: str, *, tag: str, scopes: tuple[str, ...] | None,
          idempotency: str | None = None, body: Fields | None = None,
          query: dict[str, Field] | None = None, status: int = 200, websocket: bool = False,
          content_type: str = "application/json", answers: dict[int, str] | None = None,
          links: dict[str, str] | None = None,
          path_patterns: dict[str, str] | None = None, text_body: Field | None = None,
          errors: dict[int, str] | None = None,
          error_schema: dict[str, Any] | None = None,
          receipt: Callable[[Inputs], bool] | None = None) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, summary, tag, scopes, idempotency, body,
                            tuple((query or {}).items()), status, websocket, content_type,
                            tuple((answers or {}).items()), tuple((links or {}).items()),
                            tuple((path_patterns or {}).items()), text_body, tuple((errors or {}).items()),
                            error_schema, receipt))
        return handler
    return register


_obj = obj   # a body: obj(("required", ...), name=FIELD, ...)
ORDER_STATUSES = tuple(s.name.lower() for s in PaymentState)   # as the use case lists them


def operator(call: Call) -> str:
    """Who acts, for the audit trail: the body's `by`, else the API key."""
    by = call.body["by"]
    return by or (f"api:{call.key.key_id}" if call.key else "api")
