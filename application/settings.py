"""Settings the use cases need, as plain values (the container reads them from config)."""
from __future__ import annotations

import attrs

from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.payment_state import ConfirmationThresholds
from kaccy_bitcoin.domain.zeroconf import ZeroconfPolicy


@attrs.frozen
class PaymentSettings:
    thresholds: ConfirmationThresholds = ConfirmationThresholds()
    tolerance: Satoshis = Satoshis(0)
    gap_limit: int = 20
    zeroconf: ZeroconfPolicy = ZeroconfPolicy()   # off unless KACCY_ZEROCONF_MAX_SAT > 0
