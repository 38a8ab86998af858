"""In-memory adapters: for tests and for anyone embedding the library without a database."""
