"""Redis: the key and field names (``keys``), the store the worker writes through
(``store``), the bulk loader and the Lua scripts. Spec: docs/redis-keys.md.
"""
