"""rayfleet's log records in Serve's replica log files.

In a replica, Serve configures one logger, ``ray.serve``: its handlers write the
replica's file (``logs/serve/replica_<app>_<deployment>_<id>.log``) at the level
and in the encoding of the application's ``logging_config``, and it does not
propagate. rayfleet's core logs to loggers named after its modules
(``rayfleet.platform...``), which propagate to the root logger, and a Ray worker's
root logger has no handler: their INFO records (a rollout resumed after a restart)
were dropped, and their warnings (a webhook given up on, an unreadable history
entry) reached Python's last-resort handler, that is stderr, which Serve's
throughput preset turns into INFO lines of plain text in the same file, level and
structure lost. :func:`send_to_serve` hands every ``rayfleet.*`` record to
Serve's logger instead, so each is written like Serve's own, and tells
:mod:`rayfleet.platform.events_log` whether that writing is JSON.
"""

from __future__ import annotations

import logging

from ray._common.formatters import JSONFormatter

from rayfleet.platform.events_log import set_structured

__all__ = ["RAYFLEET_LOGGER", "SERVE_LOGGER", "send_to_serve", "serve_writes_json"]

# The logger Serve configures in every replica (ray.serve._private.constants).
SERVE_LOGGER = "ray.serve"
# The parent of every module logger of the package.
RAYFLEET_LOGGER = "rayfleet"


class _ToServe(logging.Handler):
    """Passes records on to Serve's logger, at the level Serve's logger is set to.

    The level is asked at each record: Serve sets it again when an application's
    ``logging_config`` changes, without restarting the replica.
    """

    def __init__(self, serve: logging.Logger) -> None:
        super().__init__()
        self.serve = serve

    def emit(self, record: logging.LogRecord) -> None:
        if self.serve.isEnabledFor(record.levelno):
            self.serve.handle(record)

    def flush(self) -> None:
        for handler in self.serve.handlers:
            handler.flush()


def send_to_serve() -> None:
    """Write every ``rayfleet.*`` record through Serve's replica logger.

    Call it in each deployment's constructor (Serve has configured its logger by
    then); a second call replaces the first.
    """
    serve = logging.getLogger(SERVE_LOGGER)
    ours = logging.getLogger(RAYFLEET_LOGGER)
    for handler in [h for h in ours.handlers if isinstance(h, _ToServe)]:
        ours.removeHandler(handler)
    ours.addHandler(_ToServe(serve))
    # Everything reaches the handler, which applies Serve's level; only the few
    # DEBUG calls of the package pay for a record that may be dropped there.
    ours.setLevel(logging.DEBUG)
    # Not to the root logger as well: its last resort is stderr, which Serve
    # may send to the same file a second time.
    ours.propagate = False
    set_structured(serve_writes_json)


def serve_writes_json() -> bool:
    """Whether Serve's logger writes records as JSON objects (``encoding: JSON``)."""
    for handler in logging.getLogger(SERVE_LOGGER).handlers:
        # Serve writes its file through a MemoryHandler that buffers for it.
        target = getattr(handler, "target", None) or handler
        if isinstance(target.formatter, JSONFormatter):
            return True
    return False
