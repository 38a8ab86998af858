"""PayJoin (BIP78 v1) receiving: `POST /pj/<token>` takes the sender's original PSBT (base64,
text/plain) and answers the proposal (base64, text/plain) or BIP78's JSON error. No API key: the
order's random token is the capability. The body limit is BIP78's 100 kB whatever
KACCY_API_MAX_BODY says; every answer carries `Access-Control-Allow-Origin: *` (app.py adds it
under OPEN_ORIGIN_PREFIXES, so aiohttp's own 404 and 405 carry it too)."""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from kaccy_bitcoin.adapters.http_api.fields import Text
from kaccy_bitcoin.adapters.http_api.routes.base import Call, route

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)
OPEN_ORIGIN_PREFIXES = ("/pj/",)
MAX_BODY = 100_000   # domain/payjoin.py MAX_ORIGINAL_BYTES
TOKEN_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_PARAM = Text(max_length=4096)
_ERROR = {"type": "object", "required": ["errorCode", "message"],
          "properties": {"errorCode": {"type": "string"}, "message": {"type": "string"},
                         "supported": {"type": "array", "items": {"type": "integer"}}}}


def _answer(status: int, code: str, message: str, **extra: object) -> web.Response:
    from aiohttp import web

    return web.Response(text=json.dumps({"errorCode": code, "message": message, **extra}), status=status,
                        content_type="application/json")


async def _read(request: web.Request) -> bytes | None:
    """The body, or None when it is over MAX_BODY (read no further)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None
    data = bytearray()
    while chunk := await request.content.read(65536):
        data += chunk
        if len(data) > MAX_BODY:
            return None
    return bytes(data)


@route("POST", "/pj/{token}", "BIP78 payjoin endpoint of an order (the `pj=` of its bip21): the original PSBT "
       "in, the proposal PSBT out", tag="payjoin", scopes=None, content_type="text/plain",
       path_patterns={"token": TOKEN_PATTERN},
       query={"v": Text(max_length=4096, description="protocol version; only 1 (absent: 1)"),
              "additionalfeeoutputindex": _PARAM, "maxadditionalfeecontribution": _PARAM,
              "minfeerate": _PARAM, "disableoutputsubstitution": _PARAM},
       text_body=Text(min_length=0, max_length=MAX_BODY, format="byte",
                      description="the original PSBT, base64, finalized, with its inputs' UTXOs"),
       errors={400: "BIP78's error: `version-unsupported` (with `supported`), `original-psbt-rejected`, "
                    "`unavailable`, `not-enough-money`",
               404: "no payjoin endpoint with this token", 413: f"the body is over {MAX_BODY} bytes",
               500: "`unavailable`: a bug (logged)", 503: "`unavailable`: the node or the database did not answer"},
       error_schema=_ERROR)
async def pay_to_payjoin(call: Call) -> web.Response:
    from aiohttp import web

    from kaccy_bitcoin.domain.errors import KaccyError, NotFound
    from kaccy_bitcoin.domain.payjoin import PayjoinRefused

    raw = await _read(call.request)
    if raw is None:
        return _answer(413, "original-psbt-rejected", f"the original is over {MAX_BODY} bytes")
    try:
        receive = await call.use("receive_payjoin")
        proposal = await receive(call.path("token"), dict(call.request.query), raw.decode("ascii", "replace"))
    except PayjoinRefused as refused:
        return _answer(400, refused.error_code, str(refused), **refused.extra)
    except NotFound as exc:
        return _answer(404, "not-found", str(exc))
    except KaccyError as exc:   # the node, the signer or the database: nothing was proposed
        return _answer(503, "unavailable", f"the payjoin endpoint is not available now ({exc.code})")
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered in BIP78's form
        log.exception("payjoin request failed")
        return _answer(500, "unavailable", "the payjoin endpoint failed")
    return web.Response(text=proposal, content_type="text/plain")
