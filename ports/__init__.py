"""Abstract ports: what the application needs from the outside world, in domain types."""
