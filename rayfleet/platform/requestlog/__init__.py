"""The request log: a sampled record of served requests, as Parquet in the store.

In the order a request meets it:

1. :mod:`.sampling`: whether a request is logged, from a hash of its request id,
   so a request is logged whole or not at all.
2. :mod:`.buffer`: a logged request waits as the arrays the router already held,
   in a buffer bounded by bytes that drops and counts when full.
3. :mod:`.writer`: :class:`RequestLog` ties them together on the router, and one
   thread per router writes what waits, in batches, never on the event loop.
4. :mod:`.table`: the log's columns, one row per item of a request's batch.
5. :mod:`.files`: ``{store}/_logs/{model}/{version}/date=YYYY-MM-DD/part-*.parquet``.
6. :mod:`.reference`: a version's ``reference.parquet`` rebuilt from its logged
   inputs (``rayfleet reference build``).

The spec is :class:`~rayfleet.platform.config.spec.RequestLogSpec`. A day's folder
is read as it is by ``rayfleet validate --data`` and ``rayfleet batch``: each
input is a column named like it (:mod:`rayfleet.platform.validation.columns`).
"""

from __future__ import annotations

from rayfleet.platform.requestlog.reference import (
    DEFAULT_REFERENCE_ROWS,
    ReferenceBuild,
    build_reference,
)
from rayfleet.platform.requestlog.sampling import Sampler
from rayfleet.platform.requestlog.table import LOG_COLUMNS, LogLayout, output_column
from rayfleet.platform.requestlog.writer import (
    PartSink,
    RequestLog,
    RequestLogCounts,
    StoreSink,
)

__all__ = [
    "DEFAULT_REFERENCE_ROWS",
    "LOG_COLUMNS",
    "LogLayout",
    "PartSink",
    "ReferenceBuild",
    "RequestLog",
    "RequestLogCounts",
    "Sampler",
    "StoreSink",
    "build_reference",
    "output_column",
]
