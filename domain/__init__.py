"""The pure core of kaccy-bitcoin: value objects, entities, state machines, rules.

Nothing here performs I/O; everything here can be tested without a node or a database.
"""
