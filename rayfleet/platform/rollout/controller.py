"""The Validator's brain, free of Ray: statistics in, traffic plans and events out.

:class:`ValidatorCore` ingests the routers' observations into per-version windows,
runs one rollout per model (its canaries one at a time, in declared order), turns
a rollout's state into the model's :class:`TrafficPlan`, and persists every change
to a :class:`StateStore`, so a restarted Validator, or a re-deployed app with the
same versions, picks the rollout up where it was. Every event, and the operator
who caused it, is also appended to the model's history and logged
(:mod:`.history`). The saves and appends go through a :class:`StoreWriter`
(:mod:`.store_writer`): the Validator's applies them on a thread of its own, and
the core's memory is the state it reads and serves, whether or not the store has
caught up.

Persisted per model, under ``{app}/{model}``::

    {"stable": "v1",                        the version serving by default
     "rollout": {...RolloutState...} | null, the current or last rollout
     "finished": {"v2": "promoted"}}        canaries done, never started again
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rayfleet.platform.config.spec import ModelSpec, PlatformSpec
from rayfleet.platform.errors import Conflict, InvalidInput, ModelNotFound
from rayfleet.platform.requestlog.writer import RequestLogCounts
from rayfleet.platform.rollout import machine as ro
from rayfleet.platform.rollout.gates import WindowComparison
from rayfleet.platform.rollout.history import (
    DEFAULT_HISTORY_LIMIT,
    Caller,
    HistoryEntry,
    RolloutHistory,
)
from rayfleet.platform.rollout.snapshot import build_snapshot
from rayfleet.platform.rollout.state_store import StateStore
from rayfleet.platform.rollout.store_writer import StoreWriter, SynchronousWriter
from rayfleet.platform.serving.aggregate import ObservationSummary, windowed_stats
from rayfleet.platform.serving.counters import (
    PoolReport,
    PoolTable,
    ReplicaReport,
    ReplicaTable,
)
from rayfleet.platform.serving.service import initial_plans
from rayfleet.platform.serving.traffic import TrafficPlan
from rayfleet.platform.validation.agreement import AgreementTracker
from rayfleet.platform.validation.compare import Comparison, compare
from rayfleet.platform.validation.observation import Observation
from rayfleet.platform.validation.totals import Totals
from rayfleet.platform.validation.window import VersionStats, WindowedStats

__all__ = ["ValidatorCore", "window_comparison"]

logger = logging.getLogger(__name__)

# How far back to look for stable's numbers when the window has too few of them
# (at the 100% step stable takes no traffic at all).
STABLE_FALLBACK_S = 600.0
MIN_STABLE_REQUESTS = 30


def window_comparison(comparison: Comparison) -> WindowComparison:
    """The numbers the rollout gates read, from the validation comparison."""
    drift = comparison.prediction_drift
    agreement = comparison.agreement
    input_drift = comparison.input_drift
    return WindowComparison(
        canary_requests=comparison.canary.requests,
        stable_requests=comparison.stable.requests,
        canary_error_rate=comparison.canary.error_rate or 0.0,
        stable_error_rate=comparison.stable.error_rate or 0.0,
        canary_p50_ms=comparison.canary.p50_ms,
        canary_p99_ms=comparison.canary.p99_ms,
        stable_p50_ms=comparison.stable.p50_ms,
        stable_p99_ms=comparison.stable.p99_ms,
        canary_model_p50_ms=comparison.canary.model_p50_ms,
        canary_model_p99_ms=comparison.canary.model_p99_ms,
        stable_model_p50_ms=comparison.stable.model_p50_ms,
        stable_model_p99_ms=comparison.stable.model_p99_ms,
        prediction_js=drift.js if drift is not None else None,
        prediction_chi2_pvalue=drift.pvalue if drift is not None else None,
        input_drift_share=input_drift.drifted_share
        if input_drift is not None
        else None,
        shadow_pairs=agreement.pairs if agreement is not None else 0,
        agreement=agreement.rate if agreement is not None else None,
        canary_latency=comparison.canary_latency,
        stable_latency=comparison.stable_latency,
        canary_model_latency=comparison.canary_model_latency,
        stable_model_latency=comparison.stable_model_latency,
    )


class ValidatorCore:
    """Per-version statistics and the rollouts of one application's models."""

    def __init__(
        self,
        spec: PlatformSpec,
        app: str,
        store: StateStore,
        references: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
        now: float,
        *,
        decision_log: logging.Logger | None = None,
        writer: StoreWriter | None = None,
    ) -> None:
        """``decision_log`` gets one JSON line per rollout event (:mod:`.history`);
        by default this module's logger. ``writer`` makes the writes to ``store``;
        by default each is made at once, on the caller's thread. The saved state is
        read from ``store`` here, once."""
        self.spec = spec
        self.app = app
        self.store = store
        self.writer: StoreWriter = writer or SynchronousWriter(store, decision_log)
        self.references = references
        observations = spec.observations
        self.stats: dict[tuple[str, str], WindowedStats] = {}
        self.totals: dict[tuple[str, str], Totals] = {}
        for model in spec.models:
            for version in model.versions:
                key = (model.name, version.name)
                self.stats[key] = windowed_stats(observations)
                self.totals[key] = Totals()
        self.agreement = {model.name: AgreementTracker() for model in spec.models}
        self.stable: dict[str, str] = {}
        self.rollouts: dict[str, ro.RolloutState] = {}
        self.finished: dict[str, dict[str, str]] = {}
        self.routers_dropped: dict[str, int] = {}
        self.request_logs: dict[str, RequestLogCounts] = {}
        self.ingested = 0
        # Three missed reports before a replica is taken for gone.
        expire_s = max(60.0, 3 * observations.replica_report_s)
        self.replicas = ReplicaTable(expire_s=expire_s)
        self.pools = PoolTable(expire_s=expire_s)
        self.events: list[ro.Event] = []
        self.history = RolloutHistory(store, app, decision_log or logger, self.writer)
        for model in spec.models:
            self._load(model, now)

    # -- state ---------------------------------------------------------------

    def _key(self, model: str) -> str:
        return f"{self.app}/{model}"

    def _load(self, model: ModelSpec, now: float) -> None:
        declared = {v.name for v in model.versions}
        saved = self.store.read_state(self._key(model.name)) or {}
        stable = saved.get("stable")
        self.stable[model.name] = stable if stable in declared else model.stable_version
        self.finished[model.name] = {
            v: phase for v, phase in saved.get("finished", {}).items() if v in declared
        }
        if model.rollout is None:
            return
        current = saved.get("rollout")
        if current is not None:
            try:
                state = ro.RolloutState.from_dict(current)
            except ValueError as error:
                logger.warning(
                    "ignoring unreadable rollout of %s: %s", model.name, error
                )
            else:
                if state.canary_version in declared:
                    self.rollouts[model.name] = state
                    logger.info(
                        "resuming rollout of %s/%s at %s, weight %g",
                        model.name,
                        state.canary_version,
                        state.phase.value,
                        state.weight,
                    )
        self._start_next(model, now)

    def _save(self, model: str) -> None:
        state = self.rollouts.get(model)
        self.writer.write_state(
            self._key(model),
            {
                "stable": self.stable[model],
                "rollout": state.to_dict() if state is not None else None,
                "finished": self.finished[model],
            },
        )

    def _start_next(self, model: ModelSpec, now: float) -> None:
        """Start the next declared canary when no rollout of the model is live."""
        assert model.rollout is not None
        current = self.rollouts.get(model.name)
        if current is not None and not current.finished:
            return
        stable = self.stable[model.name]
        for version in model.versions:
            name = version.name
            done = self.finished[model.name]
            if not version.canary or name == stable or name in done:
                continue
            state, events = ro.start(model.name, name, stable, model.rollout, now)
            self.rollouts[model.name] = state
            self.agreement[model.name] = AgreementTracker()
            self._emit(events)
            self._save(model.name)
            return

    def _emit(self, events: Iterable[ro.Event], caller: Caller | None = None) -> None:
        events = tuple(events)
        self.history.record(events, caller)
        self.events.extend(events)
        # The dashboard's timeline needs only recent events; every event is kept
        # in the store's history, and each rollout's transitions in its state.
        del self.events[:-500]

    # -- observations -------------------------------------------------------

    def ingest(
        self,
        summary: ObservationSummary,
        router: str = "",
        dropped: int = 0,
        request_log: Mapping[str, Any] | None = None,
    ) -> int:
        """Merge one router's :class:`ObservationSummary`; the count it held.

        ``dropped`` is that router's running count of observations it lost;
        ``request_log`` its request log's running counts
        (:meth:`RequestLogCounts.to_dict`), when it keeps one. Versions this spec
        does not declare are skipped.
        """
        count = 0
        for key, part in summary.versions.items():
            stats = self.stats.get(key)
            if stats is None:
                continue
            # A router of another spec (a redeploy under way) may cut other
            # buckets: its part is left out whole, never merged halfway.
            if part.stats.bucket_s != stats.bucket_s:
                logger.warning(
                    "observations of %s/%s skipped: %g s buckets, the Validator's "
                    "are %g s",
                    *key,
                    part.stats.bucket_s,
                    stats.bucket_s,
                )
                continue
            stats.merge(part.stats)
            self.totals[key].merge(part.totals)
            count += part.observations
        for row in summary.pairs:
            observation = Observation.from_row(row)
            if (observation.model, observation.version) in self.stats:
                self.agreement[observation.model].add(observation)
        for model, unpaired in summary.unpaired.items():
            if model in self.agreement:
                self.agreement[model].lose(unpaired)
        self.ingested += count
        if router:
            self.routers_dropped[router] = dropped
            if request_log is not None:
                self.request_logs[router] = RequestLogCounts.from_dict(request_log)
        return count

    def report_replicas(self, reports: Iterable[ReplicaReport], now: float) -> None:
        """Keep the replicas' latest request counters; unknown versions are skipped."""
        known = [r for r in reports if (r.model, r.version) in self.stats]
        self.replicas.update(known, now)

    def report_pools(self, reports: Iterable[PoolReport], now: float) -> None:
        """Keep the pool replicas' latest reports, whatever versions they name:
        what a replica holds takes memory even when no model declares it now (a
        replica of the previous deployment, during an update)."""
        self.pools.update(reports, now)

    # -- the control loop ---------------------------------------------------

    def comparison(self, model: str, now: float) -> Comparison | None:
        """Canary against stable over the live rollout's current window."""
        state = self.rollouts.get(model)
        if state is None:
            return None
        window_s = max(now - state.step_started_at, 0.0)
        canary = self.stats[(model, state.canary_version)].window(window_s, now)
        stable_stats = self.stats[(model, state.stable_version)]
        stable: VersionStats = stable_stats.window(window_s, now)
        if stable.requests < MIN_STABLE_REQUESTS:
            stable = stable_stats.window(max(window_s, STABLE_FALLBACK_S), now)
        reference = self.references.get((model, state.canary_version))
        return compare(
            stable,
            canary,
            reference,
            alpha=self.spec.observations.alpha,
            agreement=self.agreement[model].snapshot(),
        )

    def awaiting_canary(self) -> bool:
        """Whether a live rollout waits in PENDING for its canary to be ready.

        Only then does :meth:`tick` read its ``ready``, so only then need the
        Validator ask Serve: ``serve.status()`` costs its caller about 28 ms of
        CPU and Serve's controller 9 ms (loadtest/RESULTS.md).
        """
        for model in self.spec.models:
            state = self.rollouts.get(model.name)
            if (
                model.rollout is not None
                and state is not None
                and not state.finished
                and state.phase is ro.Phase.PENDING
            ):
                return True
        return False

    def tick(self, now: float, ready: Mapping[tuple[str, str], bool]) -> list[ro.Event]:
        """Advance every live rollout once; return the events it produced.

        ``ready`` says which versions can take requests: a PENDING rollout waits
        for its canary, so starting replicas never counts as step time. A
        version in its own replicas is ready with a warm one; a pooled version
        with its pool, whose replicas load it on its first request there.
        """
        produced: list[ro.Event] = []
        for model in self.spec.models:
            state = self.rollouts.get(model.name)
            if model.rollout is None or state is None or state.finished:
                continue
            if state.phase is ro.Phase.PENDING and not ready.get(
                (model.name, state.canary_version), False
            ):
                continue
            comparison = self.comparison(model.name, now)
            assert comparison is not None
            new_state, events = ro.step(
                state, model.rollout, window_comparison(comparison), now
            )
            produced.extend(self._apply(model, state, new_state, events, now))
        return produced

    def _apply(
        self,
        model: ModelSpec,
        old: ro.RolloutState,
        new: ro.RolloutState,
        events: tuple[ro.Event, ...],
        now: float,
        caller: Caller | None = None,
    ) -> list[ro.Event]:
        self.rollouts[model.name] = new
        if new.step_started_at != old.step_started_at:
            # Each step is judged on its own traffic, shadow pairs included.
            self.agreement[model.name] = AgreementTracker()
        if new.finished and not old.finished:
            self.finished[model.name][new.canary_version] = new.phase.value
            if new.phase is ro.Phase.PROMOTED:
                self.stable[model.name] = new.canary_version
        if events or new != old:
            self._emit(events, caller)
            self._save(model.name)
        if new.finished:
            before = len(self.events)
            self._start_next(model, now)
            return [*events, *self.events[before:]]
        return list(events)

    # -- operators ----------------------------------------------------------

    def act(
        self,
        model: str,
        action: str,
        now: float,
        weight: float | None = None,
        caller: Caller | None = None,
    ) -> list[ro.Event]:
        """An operator's promote, rollback, pause, resume or weights on a rollout.

        ``caller`` is who asked, for the history (an unknown operator if None).
        Raises :class:`ModelNotFound` for a model without a rollout,
        :class:`InvalidInput` for a weight outside [0, 100] (NaN included), and
        :class:`Conflict` when the rollout's phase refuses the action.
        """
        spec = self._model(model)
        state = self.rollouts.get(model)
        if spec.rollout is None or state is None:
            raise ModelNotFound(f"model {model!r} has no rollout")
        # The transitions say "operator: " themselves.
        reason = action
        try:
            if action == "promote":
                new, events = ro.promote(state, now, reason)
            elif action == "rollback":
                new, events = ro.rollback(state, now, reason)
            elif action == "pause":
                new, events = ro.pause(state, now, reason)
            elif action == "resume":
                new, events = ro.resume(state, now, reason)
            elif action == "weights":
                if weight is None:
                    raise Conflict("weights needs a canary weight in percent")
                # Written so that NaN fails it too; the admin body checks this
                # first, other callers meet it here rather than as a ValueError.
                if not 0 <= weight <= 100:
                    raise InvalidInput(
                        f"weight must be a percent in [0, 100]: {weight}"
                    )
                new, events = ro.set_weight(state, weight, now, reason)
            else:
                raise ModelNotFound(f"no rollout action {action!r}")
        except ro.InvalidTransition as error:
            raise Conflict(str(error)) from None
        return self._apply(spec, state, new, events, now, caller or Caller())

    def read_history(
        self, model: str, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> list[HistoryEntry]:
        """The last ``limit`` recorded events of ``model``, oldest first.

        Reads the store: call it off the event loop. Raises :class:`ModelNotFound`
        for a model this application does not serve.
        """
        self._model(model)
        return self.history.read(model, limit)

    def _model(self, name: str) -> ModelSpec:
        try:
            return self.spec.model(name)
        except KeyError:
            raise ModelNotFound(f"no model {name!r}") from None

    # -- what routers and people read --------------------------------------

    def plans(self) -> dict[str, TrafficPlan]:
        """Each model's traffic plan under its rollout and promotions."""
        plans = initial_plans(self.spec)
        for model in self.spec.models:
            base = dict(plans[model.name].weights)
            stable = self.stable[model.name]
            if stable != model.stable_version:
                base = {name: 0.0 for name in base} | {stable: 100.0}
            state = self.rollouts.get(model.name)
            shadow, shadow_pct = None, 0.0
            if state is not None and state.phase is not ro.Phase.PROMOTED:
                weights = ro.traffic_weights(state)
                base = {name: 0.0 for name in base} | weights
                shadow_pct = ro.shadow_percent(state)
                shadow = state.canary_version if shadow_pct > 0 else None
            plans[model.name] = TrafficPlan(model.name, base, shadow, shadow_pct)
        return plans

    def snapshot(self, now: float, window_s: float = 300.0) -> dict[str, Any]:
        """Everything ``/-/validation`` and the dashboard show, JSON-ready."""
        return build_snapshot(self, now, window_s)

    def latency_sketches(
        self, now: float, window_s: float
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Per model and version, the window's latency sketches, JSON-ready:
        ``{"e2e": ..., "model": ...}`` in :meth:`LatencySketch.to_dict` form.

        The whole distributions behind the snapshot's p50 and p99, for tools that
        replay real latency (``loadtest/rollout_trials.py --record``); a few KB
        per version, so the snapshot carries them only when asked.
        """
        sketches: dict[str, dict[str, dict[str, Any]]] = {}
        for (model, version), windowed in self.stats.items():
            stats = windowed.window(window_s, now)
            sketches.setdefault(model, {})[version] = {
                "e2e": stats.latency.to_dict(),
                "model": stats.model_latency.to_dict(),
            }
        return sketches
