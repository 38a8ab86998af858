"""Records for the Bitcoin layer-2 systems the platform bridges to (Stacks, RSK)."""
from __future__ import annotations

import enum

import attrs


class L2TxStatus(enum.Enum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"


@attrs.frozen
class L2Transaction:
    txid: str
    status: L2TxStatus
    block_height: int | None = None


@attrs.frozen
class L2Balance:
    address: str
    amount: int   # smallest unit of the L2 asset (micro-STX, wei)
    unit: str
