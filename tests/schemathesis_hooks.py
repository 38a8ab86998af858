"""What the document's custom formats are, for schemathesis (loaded through tests/schemathesis.toml).

`bitcoin-address`: an address of the deployment's network, with a valid checksum, which no
pattern can say; the fuzz test hands over the regtest node's own addresses of each type in
KACCY_FUZZ_ADDRESSES (comma-separated)."""
from __future__ import annotations

import os

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.format("bitcoin-address", st.sampled_from(os.environ["KACCY_FUZZ_ADDRESSES"].split(",")))
