"""Limits and the audit trail."""
from __future__ import annotations

from typing import Any

from kaccy_bitcoin.adapters.http_api.errors import ApiError
from kaccy_bitcoin.adapters.http_api.fields import AMOUNT_SAT, BY, SINCE, USER, Integer, Text
from kaccy_bitcoin.adapters.http_api.routes.base import ADMIN, READ, WITHDRAW, Call, _obj, operator, route


_USER_LIMITS = ("daily_sat", "monthly_sat", "single_max_sat", "hourly_sat")
_LIMIT_FIELDS = (*_USER_LIMITS, "platform_daily_sat")


@route("GET", "/v1/limits", "The stored withdrawal limits (a user's and the platform's)", tag="controls",
       scopes=(READ, WITHDRAW), query={"user": USER})
async def show_limits(call: Call) -> dict[str, Any]:
    show = await call.use("show_limits")
    return await show(call.args["user"])


@route("POST", "/v1/limits", "Set a user's limits or the platform's daily limit (fields not given keep their "
       "value)", tag="controls", scopes=(ADMIN,), idempotency="optional",
       body=_obj([], user=USER, by=BY, **{f: AMOUNT_SAT for f in _LIMIT_FIELDS},
                 any_of=(("platform_daily_sat",), *(("user", f) for f in _USER_LIMITS)), rules_code="invalid_amount",
                 needs=tuple((f, "user") for f in _USER_LIMITS)))
async def set_limits(call: Call) -> dict[str, Any]:
    user = call.body["user"]
    values = {f: call.body[f] for f in _LIMIT_FIELDS}
    by = operator(call)
    set_them = await call.use("set_limits")
    return await set_them(user, by=by, **values)


@route("GET", "/v1/audit/verify", "Check the audit trail's hash chain: {ok, entries, head} or {ok: false, "
       "first_bad, ...}", tag="controls", scopes=(ADMIN,))
async def verify_audit(call: Call) -> dict[str, Any]:
    verify = await call.use("verify_audit")
    return await verify()


@route("GET", "/v1/audit", "Audit entries about a subject and/or since a time, oldest first", tag="controls",
       scopes=(ADMIN,), query={"subject": Text(max_length=200), "since": SINCE,
                              "limit": Integer(high=100_000, default=1000)})
async def query_audit(call: Call) -> dict[str, Any]:
    import datetime as dt

    since_text = call.args["since"]
    since = None
    if since_text is not None:
        try:
            since = (dt.datetime.fromtimestamp(int(since_text), dt.timezone.utc) if since_text.isdigit()
                     else dt.datetime.fromisoformat(since_text))
        except (ValueError, OverflowError, OSError):
            raise ApiError(400, "invalid_request", f"since must be an ISO 8601 time or Unix seconds, "
                                                   f"got {since_text!r:.60}") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.timezone.utc)
    query = await call.use("query_audit")
    return await query(call.args["subject"], since, call.args["limit"])
