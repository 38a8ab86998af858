"""Configuration: `KACCY_*` environment variables, optionally over a TOML file.

The TOML file (path in `KACCY_CONFIG`) uses the same names in lower case without the
prefix (`network = "regtest"`, `bitcoin_rpc_url = "..."`); the environment wins.

Several Bitcoin nodes: `KACCY_BITCOIN_RPC_URL` lists them comma-separated (sharing the user,
password or cookie), or the TOML file holds `[[bitcoin_node]]` tables (`url`, `user`,
`password` or `cookie`) for different credentials. Order is preference. `bitcoin_nodes` in
the result lists every node as {"url", "user", "password", "cookie"}.
"""
from __future__ import annotations

import math
import os
import pathlib
import tomllib
from typing import Any, Mapping

from kaccy_bitcoin.domain.errors import KaccyError

DEFAULTS: dict[str, Any] = {
    "network": "regtest",
    "data_dir": None,
    "database_url": None,
    "bitcoin_rpc_url": None,
    "bitcoin_rpc_user": None,
    "bitcoin_rpc_password": None,
    "bitcoin_rpc_cookie": None,
    "bitcoin_rpc_wallet": "kaccy-watch",
    "xpub": None,
    "xpub_fingerprint": None,
    "address_type": "p2wpkh",
    "confirmations": "1,3,6",
    "tolerance_sat": "0",
    "gap_limit": "20",
    "poll_interval": "30",
    "zmq": "auto",
    "signer_mnemonic": None,
    "signer_passphrase": "",
    "signer_core_wallet": "kaccy-hot",
    "fallback_fee_rate": "2",
    "fee_target_blocks": "6",
    "rebroadcast_delay": "30",
    "stuck_after": "21600",
    "withdrawal_ttl": "86400",
    "long_term_fee_rate": "10",
    "consolidate_above": "0",
    "lnd_rest_url": None,
    "lnd_macaroon": None,
    "lnd_tls_cert": None,
    "api_rate_limit": "100",
    "api_rate_burst": "200",
    "api_max_body": "65536",
    "ready_max_lag": "2",
    "webhook_retry_first": "1",
    "webhook_retry_max": "30",
    "webhook_allow_private": "false",
    "log_level": "info",
    "review_score": "70",
    "custody_tiers": None,
    "custody_targets": None,
    "ln_max_fee_ppm": "5000",
    "swap_min_depth": "1",
    "swap_safety_blocks": "12",
    "swap_auto_refund": "on",
    # Every outgoing connection through this SOCKS5 proxy (socks5h://HOST:PORT), except to the
    # hosts of proxy_except (comma-separated names); adapters/net/http.py.
    "proxy": None,
    "proxy_except": None,
    # `serve --onion`: Tor's control port (HOST:PORT) and its password (else cookie authentication).
    "tor_control": None,
    "tor_control_password": None,
    "zeroconf_max_sat": "0",
    "zeroconf_max_score": "30",
    # Where customers reach `serve` (https://pay.example.com): `checkout_url` is this + /pay/{token};
    # unset, the path alone.
    "public_url": "",
    "payjoin_url": None,
    "payjoin_fallback_after": "60",
    "node_max_lag": "2",
    "node_fork_depth": "6",
    "payjoin_timeout": "30",
}
NODE_KEYS = ("url", "user", "password", "cookie")


class ConfigError(KaccyError, ValueError):
    code = "config_error"


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "kaccy-bitcoin")


def load(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The effective configuration as a plain dict (what the container's Configuration takes)."""
    env = os.environ if env is None else env
    values = dict(DEFAULTS)
    path = env.get("KACCY_CONFIG")
    if path:
        try:
            data = tomllib.loads(pathlib.Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read KACCY_CONFIG file {path}: {exc}") from None
        tables = data.pop("bitcoin_node", None)
        if tables is not None:
            values["bitcoin_nodes"] = _node_tables(tables, path)
        unknown = set(data) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update({k: str(v) for k, v in data.items()})
    for key in DEFAULTS:
        value = env.get(f"KACCY_{key.upper()}")
        if value not in (None, ""):
            values[key] = value
    _nodes(values)
    values["data_dir"] = values["data_dir"] or default_data_dir()
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{os.path.join(values['data_dir'], 'kaccy.db')}"
    if values["zmq"] not in ("auto", "off"):
        raise ConfigError(f"KACCY_ZMQ must be auto (use the node's ZMQ notifications if it publishes any) "
                          f"or off, got {values['zmq']!r}")
    for key in ("tolerance_sat", "gap_limit", "fee_target_blocks", "consolidate_above", "api_rate_burst",
                "api_max_body", "ready_max_lag", "swap_min_depth", "swap_safety_blocks", "node_max_lag",
                "node_fork_depth"):
        if not str(values[key]).isdigit():
            raise ConfigError(f"KACCY_{key.upper()} must be a non-negative integer, got {values[key]!r}")
        values[key] = int(values[key])
    # on/off, or true/false as the other switches (and as `serve --workers` hands it to its workers)
    refund = str(values["swap_auto_refund"]).strip().lower()
    if refund not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"KACCY_SWAP_AUTO_REFUND must be on or off, got {values['swap_auto_refund']!r}")
    values["swap_auto_refund"] = refund in ("on", "true", "1", "yes")
    score = str(values["review_score"]).strip()
    if not (score.isascii() and score.isdigit()) or int(score) > 101:
        raise ConfigError(f"KACCY_REVIEW_SCORE must be a whole number from 0 to 101 (101: never hold), "
                          f"got {values['review_score']!r}")
    values["review_score"] = int(score)
    max_sat = str(values["zeroconf_max_sat"]).strip()
    if not (max_sat.isascii() and max_sat.isdigit()):
        raise ConfigError(f"KACCY_ZEROCONF_MAX_SAT must be a whole number of satoshis (0: accept nothing before "
                          f"it confirms), got {values['zeroconf_max_sat']!r}")
    values["zeroconf_max_sat"] = int(max_sat)
    zc_score = str(values["zeroconf_max_score"]).strip()
    if not (zc_score.isascii() and zc_score.isdigit()) or int(zc_score) > 100:
        raise ConfigError(f"KACCY_ZEROCONF_MAX_SCORE must be a whole number from 0 to 100 (the highest zero-conf "
                          f"risk accepted before confirmation), got {values['zeroconf_max_score']!r}")
    values["zeroconf_max_score"] = int(zc_score)
    ppm = str(values["ln_max_fee_ppm"]).strip()
    if not (ppm.isascii() and ppm.isdigit()) or int(ppm) > 1_000_000:
        raise ConfigError(f"KACCY_LN_MAX_FEE_PPM must be a whole number of parts per million from 0 to 1000000 "
                          f"(the most a Lightning payout's routing may cost), got {values['ln_max_fee_ppm']!r}")
    values["ln_max_fee_ppm"] = int(ppm)
    public = str(values["public_url"] or "").strip().rstrip("/")
    if public and not (public.startswith(("http://", "https://")) and "?" not in public and "#" not in public
                       and len(public) > len("https://")):
        raise ConfigError(f"KACCY_PUBLIC_URL must be an http:// or https:// URL without query or fragment "
                          f"(where customers reach the service), got {values['public_url']!r}")
    values["public_url"] = public
    try:
        rate = float(values["api_rate_limit"])
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate < 0:
        raise ConfigError(f"KACCY_API_RATE_LIMIT must be a non-negative number of requests per second per key "
                          f"(0: no limit), got {values['api_rate_limit']!r}")
    values["api_rate_limit"] = rate
    allow = str(values["webhook_allow_private"]).strip().lower()
    if allow not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"KACCY_WEBHOOK_ALLOW_PRIVATE must be true or false, got {values['webhook_allow_private']!r}")
    values["webhook_allow_private"] = allow in ("true", "1", "yes")
    values["payjoin_url"] = _payjoin_url(values["payjoin_url"], str(values["network"]))
    for key in ("poll_interval", "rebroadcast_delay", "stuck_after", "withdrawal_ttl", "webhook_retry_first",
                "webhook_retry_max", "payjoin_fallback_after", "payjoin_timeout"):
        try:
            seconds = float(values[key])
        except ValueError:
            seconds = math.nan
        positive = key in ("poll_interval", "payjoin_timeout")   # zero: a busy loop, or no wait at all
        if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
            raise ConfigError(f"KACCY_{key.upper()} must be a {'positive' if positive else 'non-negative'} "
                              f"number of seconds, got {values[key]!r}")
        values[key] = seconds
    if values["proxy_except"] and not values["proxy"]:
        raise ConfigError("KACCY_PROXY_EXCEPT lists hosts to reach without the proxy, but KACCY_PROXY is not set")
    if values["proxy"]:
        from kaccy_bitcoin.adapters.net.proxy import ProxySettings

        ProxySettings.parse(values["proxy"], values["proxy_except"])   # refuses a proxy that cannot work
    return values


def _payjoin_url(url: str | None, network: str) -> str | None:
    """KACCY_PAYJOIN_URL, the service's public base URL: https, or an onion service; plain http
    only for a loopback address or on regtest (BIP78 wants an authenticated, encrypted endpoint)."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    ok = parts.scheme == "https" or (parts.scheme == "http" and (host.endswith(".onion") or loopback
                                                                 or network.strip().lower() == "regtest"))
    if not host or not ok or parts.query or parts.fragment:
        raise ConfigError(f"KACCY_PAYJOIN_URL must be the service's public base URL over https (http only for an "
                          f".onion, loopback address or on regtest), without query, got {url!r}")
    return url.strip().rstrip("/")


def _node_tables(tables: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"bitcoin_node in {path} must be one or more [[bitcoin_node]] tables")
    nodes = []
    for i, table in enumerate(tables, 1):
        unknown = set(table) - set(NODE_KEYS)
        if unknown:
            raise ConfigError(f"unknown keys in [[bitcoin_node]] number {i} of {path}: {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(NODE_KEYS)})")
        if not isinstance(table.get("url"), str) or not table["url"]:
            raise ConfigError(f"[[bitcoin_node]] number {i} of {path} has no url")
        if not table.get("cookie") and not table.get("user"):
            raise ConfigError(f"[[bitcoin_node]] number {i} of {path} needs user and password, or cookie")
        nodes.append({k: (str(table[k]) if table.get(k) is not None else None) for k in NODE_KEYS})
    return nodes


def _nodes(values: dict[str, Any]) -> None:
    """Every node in `bitcoin_nodes`; the first one's settings in `bitcoin_rpc_*` (the node of a
    single-node set-up, and of what only one node serves)."""
    url = values["bitcoin_rpc_url"]
    tables = values.get("bitcoin_nodes")
    if url or not tables:
        urls = [u.strip() for u in str(url).split(",")] if url else []
        if any(not u for u in urls):
            raise ConfigError("KACCY_BITCOIN_RPC_URL lists an empty node URL (comma-separated URLs, no empty one)")
        values["bitcoin_nodes"] = [{"url": u, "user": values["bitcoin_rpc_user"],
                                    "password": values["bitcoin_rpc_password"],
                                    "cookie": values["bitcoin_rpc_cookie"]} for u in urls]
        if len(urls) > 1:
            values["bitcoin_rpc_url"] = urls[0]
        return
    first = tables[0]
    values["bitcoin_rpc_url"] = first["url"]
    values["bitcoin_rpc_user"], values["bitcoin_rpc_password"] = first["user"], first["password"]
    values["bitcoin_rpc_cookie"] = first["cookie"]
