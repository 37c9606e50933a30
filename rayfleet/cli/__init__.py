"""The ``rayfleet`` command (entry point :func:`rayfleet.cli.main.main`).

Outside the pure core because its commands start Ray and Serve; each command group
is a module with a ``register`` function that adds its subcommands to the parser.
"""
