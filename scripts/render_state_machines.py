"""Print docs/state-machines.md from the machine definitions."""
from kaccy_bitcoin.domain.machines import render_markdown

if __name__ == "__main__":
    print(render_markdown(), end="")
