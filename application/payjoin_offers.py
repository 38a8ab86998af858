"""PayJoin's part in orders: the settings, each order's session and token, its `pj=`, and what
`order show` says of a payjoin. Light on purpose: `order create` and `order show` import it, not
python-bitcointx (application/payjoin.py answers and follows the proposals)."""
from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import attrs

from kaccy_bitcoin.domain.bitcoin import Network
from kaccy_bitcoin.domain.payjoin_session import PayjoinSession, new_token
from kaccy_bitcoin.ports.storage import UnitOfWork


@attrs.frozen
class PayjoinSettings:
    network: Network
    url: str | None = None            # KACCY_PAYJOIN_URL when the software signer is configured, else None
    fallback_after: float = 60.0      # KACCY_PAYJOIN_FALLBACK_AFTER, seconds

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def endpoint(self, token: str) -> str | None:
        """The `pj=` value of an order's BIP21 URI, percent-encoded as BIP21 asks."""
        return quote(f"{self.url}/pj/{token}", safe=":/") if self.url else None


def with_payjoin(uri: str, settings: PayjoinSettings | None, token: str | None) -> str:
    """A BIP21 URI with the order's `pj=` (unchanged when payjoin is off)."""
    pj = settings.endpoint(token) if settings is not None and token else None
    return f"{uri}&pj={pj}" if pj else uri


def ensure_session(uow: UnitOfWork, order_id: str, at: dt.datetime) -> PayjoinSession:
    """The order's session, a new one (with a fresh token) added if it has none."""
    found = uow.payjoins.for_orders([order_id]).get(order_id)
    if found is not None:
        return found
    session = PayjoinSession(new_token(), order_id, at)
    uow.payjoins.add(session)
    return session


def payjoin_view(session: PayjoinSession | None, txids: list[str]) -> dict[str, Any] | None:
    """What `order show` says of a payjoin: set when the proposal's transaction pays the order
    (null for an order paid otherwise, the fallback's original included)."""
    if session is None or session.proposal_txid is None or session.proposal_txid.value not in txids:
        return None
    return {"txid": session.proposal_txid.value, "contributed_sat": session.contributed_sat}
