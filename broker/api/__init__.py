"""The thin HTTP layer: parse, call a service, shape the answer."""
