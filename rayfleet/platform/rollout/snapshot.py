"""What ``/-/validation`` and the dashboard show: one JSON document per moment.

Read-only over a :class:`~rayfleet.platform.rollout.controller.ValidatorCore`:
per model its traffic plan, per version the window's summary, time series,
totals and replicas, the rollout's state and its live comparison, and the
recent events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rayfleet.platform.rollout.machine import RolloutState

if TYPE_CHECKING:
    from rayfleet.platform.rollout.controller import ValidatorCore

__all__ = ["EVENTS_SHOWN", "build_snapshot"]

# The dashboard's event list; each rollout's full history lives in its state.
EVENTS_SHOWN = 50


def build_snapshot(core: ValidatorCore, now: float, window_s: float) -> dict[str, Any]:
    """Everything ``/-/validation`` and the dashboard show, JSON-ready."""
    plans = core.plans()
    replicas: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for report in core.replicas.current(now):
        replicas.setdefault((report.model, report.version), []).append(
            {
                "replica": report.replica,
                "requests": report.requests,
                "errors": report.errors,
            }
        )
    models = []
    for model in core.spec.models:
        versions = []
        for version in model.versions:
            key = (model.name, version.name)
            windowed = core.stats[key]
            summary = windowed.window(window_s, now).summary().to_dict()
            series = [p.to_dict() for p in windowed.series(window_s, now)]
            versions.append(
                {
                    "name": version.name,
                    "canary": version.canary,
                    "weight": plans[model.name].weights.get(version.name, 0.0),
                    "window": summary,
                    "series": series,
                    "total_requests": core.totals[key].requests,
                    "replicas": replicas.get(key, []),
                }
            )
        state = core.rollouts.get(model.name)
        comparison = core.comparison(model.name, now) if state else None
        models.append(
            {
                "name": model.name,
                "stable": core.stable[model.name],
                "plan": plans[model.name].to_dict(),
                "versions": versions,
                "rollout": _rollout_view(state),
                "comparison": comparison.to_dict() if comparison else None,
                "finished": core.finished[model.name],
            }
        )
    return {
        "app": core.app,
        "now": now,
        "window_s": window_s,
        "models": models,
        "events": [e.to_dict() for e in core.events[-EVENTS_SHOWN:]],
        "observations": {
            "ingested": core.ingested,
            "dropped": sum(core.routers_dropped.values()),
        },
    }


def _rollout_view(state: RolloutState | None) -> dict[str, Any] | None:
    """The rollout's persisted state without the storage format's version."""
    if state is None:
        return None
    view = state.to_dict()
    view.pop("format", None)
    return view
