"""The customer's hosted checkout page (no key: the unguessable token in the path is the
capability): the page, rendered on the server, and its WebSocket of this one order's changes."""
from __future__ import annotations

import json
from typing import Any, AsyncIterator

from kaccy_bitcoin.adapters.http_api.routes.base import Call, route

TOKEN = "[A-Za-z0-9_-]{16,64}"   # as application.checkout.TOKEN_PATTERN
STEPS = ("waiting", "seen", "confirmed", "paid")
STEP_WORDS = {"waiting": "Waiting", "seen": "Seen", "confirmed": "Confirmed", "paid": "Paid"}
WORDS = {
    "waiting": "Waiting for your payment",
    "seen": "Payment seen, waiting for confirmation",
    "confirmed": "Payment confirmed, waiting for more confirmations",
    "paid": "Paid. Thank you!",
    "underpaid": "Underpaid: please send the rest due",
    "overpaid": "Overpaid: you sent more than the amount; the merchant will contact you about the difference",
    "expired": "This payment request has expired",
    "failed": "This payment request can no longer be paid",
}
# The page loads nothing from elsewhere; its own script and styles are inline.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'"}


def _qr(view: dict[str, Any]) -> Any:
    from kaccy_bitcoin.adapters.http_api.pages import qr_svg

    if view["due_uri"]:
        return qr_svg(view["due_uri"], f"QR code of the payment link for the {view['due_sat']} sat still due: "
                                       f"{view['due_uri']}")
    return qr_svg(view["payment_uri"], f"QR code of the payment link for {view['amount_sat']} sat: "
                                       f"{view['payment_uri']}")


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@route("GET", "/pay/{token}", "The customer's checkout page of one order (a web page; the token, from the order's "
       "`checkout_url`, is the key)", tag="checkout", scopes=None, content_type="text/html",
       path_patterns={"token": TOKEN})
async def checkout_page(call: Call) -> Any:
    from aiohttp import web
    from markupsafe import Markup

    from kaccy_bitcoin.adapters.http_api.pages import render

    token = call.path("token")
    show = await call.use("show_checkout")
    view = await show(token)
    # A failed order (expired by the monitor) reached none of the steps.
    reached = STEPS.index(view["progress"]) if view["progress"] in STEPS else -1
    page = render("checkout.html", view=view, qr=_qr(view), steps=STEPS, reached=reached, step_words=STEP_WORDS,
                  words=WORDS,
                  words_json=Markup(_script_json(WORDS)), steps_json=Markup(_script_json(STEPS)),
                  token_json=Markup(_script_json(token)), view_json=Markup(_script_json(view)))
    return web.Response(text=page, content_type="text/html", headers=_HEADERS)


@route("GET", "/pay/{token}/ws", "WebSocket of the checkout page: the order's checkout view now, then again after "
       "each of its events, as `{\"view\", \"qr\"}` (no key: the token)", tag="checkout", scopes=None,
       websocket=True, path_patterns={"token": TOKEN})
async def checkout_stream(call: Call) -> Any:
    token = call.path("token")
    updates = await call.use("checkout_updates")
    show = await call.use("show_checkout")
    await show(token)   # an unknown token: 404 before the handshake

    async def messages() -> AsyncIterator[dict[str, Any]]:
        async for view in updates(token):
            yield {"view": view, "qr": str(_qr(view))}

    return await call.api.stream(call.request, messages())
