"""Validation statistics: what the Validator measures and the rollout gates read.

Pure Python and numpy (no Ray, no Starlette, no scipy), in modules of one idea:

- :mod:`.observation`: the per-request record and tensor summaries.
- :mod:`.sketch`: mergeable latency quantiles (DDSketch).
- :mod:`.reservoir`: mergeable uniform samples.
- :mod:`.kolmogorov`: the two-sample KS test, scipy-exact.
- :mod:`.drift`: PSI, KS per feature, Jensen-Shannon, chi-square.
- :mod:`.window`: per-version statistics in time buckets.
- :mod:`.agreement`: pairing shadow answers with their primaries.
- :mod:`.compare`: a canary against stable on one window.
- :mod:`.offline` and :mod:`.report`: pre-deploy validation and its report.
- :mod:`.predeploy`: load two stored versions and judge them offline.
- :mod:`.columns`: a table column named like a tensor, read as its rows.
- :mod:`.jobs`: the Validator's queue of pre-deploy validations.

Import from here; the modules' own ``__all__`` lists are the same names.
"""

from rayfleet.platform.validation.agreement import (
    Agreement,
    AgreementTracker,
    agreement_mask,
    predictions_agree,
)
from rayfleet.platform.validation.columns import is_tensor_column, tensor_column
from rayfleet.platform.validation.compare import (
    NON_FEATURE_COLUMNS,
    Comparison,
    PredictionDrift,
    compare,
    prediction_drift,
    reference_features,
)
from rayfleet.platform.validation.drift import (
    Counts,
    DriftReport,
    FeatureDrift,
    chi_square,
    chi_square_isf,
    chi_square_sf,
    drift_band,
    feature_drift,
    jensen_shannon,
    psi,
    psi_band,
    psi_detectable,
    psi_null,
)
from rayfleet.platform.validation.jobs import Job, JobQueue, ValidationRequest
from rayfleet.platform.validation.kolmogorov import kolmogorov_sf, ks_2samp, smirnov_sf
from rayfleet.platform.validation.observation import (
    Observation,
    ObservationColumns,
    ObservationRow,
    batch_predictions,
    summarize_batch,
    summarize_inputs,
    summarize_outputs,
)
from rayfleet.platform.validation.offline import (
    OfflineGates,
    judge_candidate,
    validate_offline,
)
from rayfleet.platform.validation.predeploy import LABEL_COLUMN, validate_versions
from rayfleet.platform.validation.report import OfflineReport, RunSummary
from rayfleet.platform.validation.reservoir import Reservoir
from rayfleet.platform.validation.sketch import LatencySketch
from rayfleet.platform.validation.totals import LATENCY_BUCKETS_MS, Totals
from rayfleet.platform.validation.window import (
    BucketPoint,
    VersionStats,
    VersionSummary,
    WindowedStats,
)

__all__ = [
    "LABEL_COLUMN",
    "LATENCY_BUCKETS_MS",
    "NON_FEATURE_COLUMNS",
    "Agreement",
    "AgreementTracker",
    "BucketPoint",
    "Comparison",
    "Counts",
    "DriftReport",
    "FeatureDrift",
    "Job",
    "JobQueue",
    "LatencySketch",
    "Observation",
    "ObservationColumns",
    "ObservationRow",
    "OfflineGates",
    "OfflineReport",
    "PredictionDrift",
    "Reservoir",
    "RunSummary",
    "Totals",
    "ValidationRequest",
    "VersionStats",
    "VersionSummary",
    "WindowedStats",
    "agreement_mask",
    "batch_predictions",
    "chi_square",
    "chi_square_isf",
    "chi_square_sf",
    "compare",
    "drift_band",
    "feature_drift",
    "is_tensor_column",
    "jensen_shannon",
    "judge_candidate",
    "kolmogorov_sf",
    "ks_2samp",
    "prediction_drift",
    "predictions_agree",
    "psi",
    "psi_band",
    "psi_detectable",
    "psi_null",
    "reference_features",
    "smirnov_sf",
    "summarize_batch",
    "summarize_inputs",
    "summarize_outputs",
    "tensor_column",
    "validate_offline",
    "validate_versions",
]
