"""API keys, webhook subscriptions and delivery signatures (the pure part)."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
from hypothesis import given, strategies as st

from kaccy_bitcoin.domain.api_access import (ApiKey, Webhook, key_hash, retry_delay, signature_header,
                                             verify_signature)
from kaccy_bitcoin.domain.errors import InvalidApiKeyRequest, InvalidWebhook

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def test_a_key_keeps_only_its_hash_and_its_scopes_in_order() -> None:
    key, secret = ApiKey.new(["withdraw", "read", "read"], T0)
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest() == key_hash(secret)
    assert secret not in repr(key) and key.scopes == ("read", "withdraw")
    assert key.allows("read") and key.allows("withdraw") and not key.allows("orders")
    admin, _ = ApiKey.new(["admin"], T0)
    assert all(admin.allows(s) for s in ("read", "orders", "withdraw", "admin"))
    for bad in ([], ["root"], ["read", 3]):
        with pytest.raises(InvalidApiKeyRequest):
            ApiKey.new(bad, T0)


def test_only_keys_that_act_on_withdrawals_see_their_psbts() -> None:
    seen = {scopes: ApiKey.new(list(scopes), T0)[0].sees_signing_material()
            for scopes in (("read",), ("orders",), ("read", "orders"), ("withdraw",), ("admin",), ("read", "withdraw"))}
    assert seen == {("read",): False, ("orders",): False, ("read", "orders"): False, ("withdraw",): True,
                    ("admin",): True, ("read", "withdraw"): True}


def test_webhook_inputs_are_checked() -> None:
    hook = Webhook.new("https://shop.example/hook", ["order_paid"], "key_1", T0, after_seq=7)
    assert hook.delivered_seq == 7 and hook.wants("order_paid") and not hook.wants("payment_detected")
    assert hook.delivery_id(8) == f"{hook.webhook_id}:8"
    assert Webhook.new("http://127.0.0.1:9/x", None, "k", T0, 0).wants("anything")
    for url, events in (("ftp://x", None), ("http://", None), (5, None), ("http://x/" + "a" * 2000, None),
                        ("http://x", []), ("http://x", ["nope"]), ("http://x", "order_paid")):
        with pytest.raises(InvalidWebhook):
            Webhook.new(url, events, "k", T0, 0)


@given(st.binary(max_size=500), st.text(min_size=1, max_size=80), st.integers(0, 2**40))
def test_the_signature_is_hmac_sha256_over_t_dot_body(body: bytes, secret: str, t: int) -> None:
    header = signature_header(secret, body, t)
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={expected}"
    assert verify_signature(secret, body, header, now=t)
    assert not verify_signature(secret + "x", body, header, now=t)
    assert not verify_signature(secret, body + b"x", header, now=t)
    assert not verify_signature(secret, body, header, now=t + 301)       # a replay, too late
    assert not verify_signature(secret, body, "garbage", now=t)


def test_retries_double_up_to_the_cap() -> None:
    assert [retry_delay(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(3, first=0.2, cap=1) == 0.8
