"""The ``online-als`` command line and the demo: ``main`` composes the subcommands,
``common`` holds what they share. Nothing outside this package imports it.
"""
