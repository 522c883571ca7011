"""The native API (/api/v1): the generations document's shape, as a superset reaching every feature."""
