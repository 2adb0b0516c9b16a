"""The serving client: reads a version's factors from Redis and ranks with
``online_als.serving``. Depends on ``worker.stores.redis``, ``worker.config`` and
``online_als`` only (tests/test_layout.py holds that).
"""
