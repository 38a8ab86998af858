import pathlib

from kaccy_bitcoin.domain.machines import render_markdown

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "state-machines.md"


def test_state_machine_doc_is_current() -> None:
    assert DOC.read_text() == render_markdown(), "docs/state-machines.md is stale: run `make docs`"
