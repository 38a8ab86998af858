"""Print adapters/sql/core_tables.py from the SQLModel tables (adapters/sql/tables.py)."""
from kaccy_bitcoin.adapters.sql.render_tables import render
from kaccy_bitcoin.adapters.sql.tables import metadata

if __name__ == "__main__":
    print(render(metadata), end="")
