"""Configuration: `KACCY_*` environment variables, optionally over a TOML file.

The TOML file (path in `KACCY_CONFIG`) uses the same names in lower case without the
prefix (`network = "regtest"`, `bitcoin_rpc_url = "..."`); the environment wins.
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
    "payjoin_timeout": "30",
}


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
        unknown = set(data) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update({k: str(v) for k, v in data.items()})
    for key in DEFAULTS:
        value = env.get(f"KACCY_{key.upper()}")
        if value not in (None, ""):
            values[key] = value
    values["data_dir"] = values["data_dir"] or default_data_dir()
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{os.path.join(values['data_dir'], 'kaccy.db')}"
    if values["zmq"] not in ("auto", "off"):
        raise ConfigError(f"KACCY_ZMQ must be auto (use the node's ZMQ notifications if it publishes any) "
                          f"or off, got {values['zmq']!r}")
    for key in ("tolerance_sat", "gap_limit", "fee_target_blocks", "consolidate_above", "api_rate_burst",
                "api_max_body", "ready_max_lag", "swap_min_depth", "swap_safety_blocks"):
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
    ppm = str(values["ln_max_fee_ppm"]).strip()
    if not (ppm.isascii() and ppm.isdigit()) or int(ppm) > 1_000_000:
        raise ConfigError(f"KACCY_LN_MAX_FEE_PPM must be a whole number of parts per million from 0 to 1000000 "
                          f"(the most a Lightning payout's routing may cost), got {values['ln_max_fee_ppm']!r}")
    values["ln_max_fee_ppm"] = int(ppm)
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
    for key in ("poll_interval", "rebroadcast_delay", "stuck_after", "withdrawal_ttl", "webhook_retry_first",
                "webhook_retry_max", "payjoin_timeout"):
        try:
            seconds = float(values[key])
        except ValueError:
            seconds = math.nan
        positive = key in ("poll_interval", "payjoin_timeout")   # zero: a busy loop, or no wait at all
        if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
            raise ConfigError(f"KACCY_{key.upper()} must be a {'positive' if positive else 'non-negative'} "
                              f"number of seconds, got {values[key]!r}")
        values[key] = seconds
    return values
