"""The swap repository's contract, on every storage adapter (memory, SQLite, PostgreSQL when
configured): a round trip of every field, optimistic concurrency, one key index per swap,
which swaps the monitor still follows."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from kaccy_bitcoin.domain.bitcoin import Network, OutPoint, Txid
from kaccy_bitcoin.domain.errors import ConcurrentUpdate
from kaccy_bitcoin.domain.htlc import Htlc, sha256
from kaccy_bitcoin.domain.money import Satoshis
from kaccy_bitcoin.domain.swaps import INITIATOR, PARTICIPANT, CounterLock, Swap

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
KEY = bytes.fromhex("02" + "11" * 32)
OTHER = bytes.fromhex("03" + "22" * 32)


def swap(swap_id: str = "s-1", index: int = 0, role: str = INITIATOR) -> Swap:
    return Swap(swap_id, role, index, KEY, OTHER, Satoshis(50_000), Satoshis(40_000), "default", T0)


def test_a_swap_round_trips_with_every_field(uow_factory) -> None:
    s = swap(role=PARTICIPANT)
    preimage = os.urandom(32)
    counter = Htlc.of(sha256(preimage), KEY, OTHER, 500)
    s.set_terms(sha256(preimage), 400, CounterLock(OutPoint(Txid("ab" * 32), 1), Satoshis(41_000),
                                                   bytes(counter.script)))
    s.funding_requested("w-1")
    s.funded(OutPoint(Txid("cd" * 32), 0), T0)
    s.lock_confirmed(120, T0)
    s.preimage_seen(preimage, "ef" * 32, T0)
    s.lock_claimed("ef" * 32, T0)
    s.redeemed(b"\x01\x02", "01" * 32, T0)
    with uow_factory() as uow:
        uow.swaps.save(s)
        uow.commit()
    with uow_factory.read() as uow:
        back = uow.swaps.get("s-1")
        assert uow.swaps.get("nope") is None
    assert back == s and back.version == 1
    assert back.machine.history == s.machine.history and back.counter.htlc == counter
    assert back.view(Network.REGTEST) == s.view(Network.REGTEST)


def test_a_stale_copy_is_refused_and_key_indexes_are_unique(uow_factory) -> None:
    with uow_factory() as uow:
        uow.swaps.save(swap())
        uow.commit()
    with uow_factory() as uow:
        first = uow.swaps.get("s-1")
    with uow_factory() as uow:
        second = uow.swaps.get("s-1")
        second.cancel(T0)
        uow.swaps.save(second)
        uow.commit()
    with uow_factory() as uow:
        first.funding_requested("w")
        with pytest.raises(ConcurrentUpdate):
            uow.swaps.save(first)
    with uow_factory() as uow:
        with pytest.raises(ConcurrentUpdate):
            uow.swaps.save(swap("s-2", index=0))


def test_listing_and_what_the_monitor_follows(uow_factory) -> None:
    fresh, funded, cancelled = swap("a", 0), swap("b", 1), swap("c", 2)
    funded.set_terms(bytes(32), 300)
    funded.funding_requested("w")
    funded.funded(OutPoint(Txid("cd" * 32), 0), T0)
    cancelled.cancel(T0)
    with uow_factory() as uow:
        for s in (fresh, funded, cancelled):
            uow.swaps.save(s)
        uow.commit()
    with uow_factory.read() as uow:
        assert [s.swap_id for s in uow.swaps.all()] == ["a", "b", "c"]
        assert [s.swap_id for s in uow.swaps.all("CANCELLED")] == ["c"]
        assert [s.swap_id for s in uow.swaps.watching()] == ["b"]


def test_swap_key_indexes_come_from_their_own_counter(uow_factory) -> None:
    from kaccy_bitcoin.application.swaps import SWAP_KEY_COUNTER

    for expected in (0, 1):
        with uow_factory() as uow:
            assert uow.addresses.allocate(SWAP_KEY_COUNTER) == expected
            uow.commit()
    with uow_factory() as uow:
        uow.addresses.allocate(SWAP_KEY_COUNTER)   # rolled back: the index is not spent
    with uow_factory.read() as uow:
        assert uow.addresses.issued(SWAP_KEY_COUNTER) == 2 and uow.addresses.issued(0) == 0
