"""PSBT signer port: anything that adds signatures to a PSBT (software keys, a node wallet)."""
from __future__ import annotations

import abc

import attrs

from kaccy_bitcoin.domain.errors import KaccyError


@attrs.frozen
class SignResult:
    psbt: str          # base64
    complete: bool     # every input has what it needs to be finalized
    signed_inputs: int


class SignerError(KaccyError):
    """A signer could not sign: no device, the wrong device or keys, a refusal."""

    code = "signer_error"


class PsbtSigner(abc.ABC):
    name: str

    @abc.abstractmethod
    async def sign(self, psbt: str) -> SignResult:
        """Sign what this signer can in a base64 PSBT; never finalizes."""
