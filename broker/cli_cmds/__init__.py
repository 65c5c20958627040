"""brokerctl's command groups, one module per area; ``broker.cli`` mounts them.

Exit codes (``_common``): 0 ok, 1 domain error (not found, conflict, refused by a
cluster), 2 usage error, 3 the database cannot be reached or is not migrated.
"""
