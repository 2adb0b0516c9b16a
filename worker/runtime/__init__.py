"""The streaming runtime: consume loop, batch applier, commit protocol, Gram refresh.

Runs in the ``online-als worker`` process; see docs/architecture.md.
"""
