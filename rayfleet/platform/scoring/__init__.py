"""Batch inference over Parquet: the pure parts of ``rayfleet batch``.

:mod:`rayfleet.deployments.scoring_job` runs a job on Ray Data; everything it decides
is here, without Ray, so unit tests drive it in milliseconds. One idea a module:

- :mod:`.plan`: :func:`plan_batch`, which columns feed which model input and
  what the output holds, checked against the dataset's schema before any row is
  read.
- :mod:`.tensors`: columns to tensors and outputs back to columns, bad values
  flagged per row.
- :mod:`.score`: :func:`score_table`, one batch through one or two runtimes, bad
  rows marked with their reason rather than raised; :func:`split_scored` then
  separates the rows to write from the rows for the error file and the batch
  statistics.
- :mod:`.stats`: :class:`BatchStats` and :class:`VersionTally`, counts that merge
  across batches.
- :mod:`.report`: :func:`comparison_report`, judged by the validation module's
  own gates (:func:`~rayfleet.platform.validation.offline.judge_candidate`), and
  the job's :class:`BatchSummary`.
- :mod:`.output`: :func:`commit_folder`, :func:`write_error_file`: output that
  appears whole or not at all, at a
  :class:`~rayfleet.platform.config.location.Location`.

Import from here; the modules share a few more names among themselves.
"""

from rayfleet.platform.config.location import Location
from rayfleet.platform.scoring.output import (
    SUCCESS_MARKER,
    commit_folder,
    write_error_file,
)
from rayfleet.platform.scoring.plan import (
    AGREE_COLUMN,
    COMPARE_PREFIX,
    COMPARE_VERSION_COLUMN,
    DEFAULT_BATCH_SIZE,
    ERROR_COLUMN,
    VALUES_COLUMN,
    VERSION_COLUMN,
    BatchPlan,
    plan_batch,
)
from rayfleet.platform.scoring.report import BatchSummary, comparison_report
from rayfleet.platform.scoring.score import score_table, split_scored
from rayfleet.platform.scoring.stats import BatchStats, VersionTally
from rayfleet.platform.scoring.tensors import InputBinding

__all__ = [
    "AGREE_COLUMN",
    "COMPARE_PREFIX",
    "COMPARE_VERSION_COLUMN",
    "DEFAULT_BATCH_SIZE",
    "ERROR_COLUMN",
    "SUCCESS_MARKER",
    "VALUES_COLUMN",
    "VERSION_COLUMN",
    "BatchPlan",
    "BatchStats",
    "BatchSummary",
    "InputBinding",
    "Location",
    "VersionTally",
    "commit_folder",
    "comparison_report",
    "plan_batch",
    "score_table",
    "split_scored",
    "write_error_file",
]
