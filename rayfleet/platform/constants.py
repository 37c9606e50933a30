"""Fixed numbers of the platform, in one place.

What a user may want to change is a spec field instead (:mod:`.config.spec`); what
stays here is either a protocol fact or a choice whose reason is written beside it.
Times are in seconds.
"""

from __future__ import annotations

from importlib import metadata

__all__ = [
    "CHANNEL_DISCOVER_EVERY_S",
    "CHANNEL_DISCOVER_TIMEOUT_S",
    "DEFAULT_EVALUATE_EVERY_S",
    "DEFAULT_VALIDATION_WINDOW_S",
    "DROPS_LOG_EVERY_S",
    "FLUSH_CHECK_S",
    "PACKAGE_VERSION",
    "REPLICA_REPORT_TIMEOUT_S",
    "ROUTER_READY_CACHE_S",
    "ROUTER_TARGET_ONGOING_REQUESTS",
    "SHUTDOWN_SLACK_S",
    "SHUTDOWN_WAIT_LOOP_S",
    "SYNC_TIMEOUT_S",
    "UNBATCHED_CONCURRENCY",
    "VALIDATOR_READY_CACHE_S",
]

# The installed distribution's version, so `GET /v2`, `rayfleet --version` and the
# package metadata never disagree.
PACKAGE_VERSION: str = metadata.version("rayfleet")

# -- router -> Validator ------------------------------------------------------
# Nothing a client waits on crosses these calls, so each is bounded only to keep a
# hung Validator from stalling the loop that makes it; the loop carries on.

# How often a router's sync loop looks at its buffer between calls: fine enough
# that a full buffer leaves within a twentieth of a second, coarse enough to cost
# nothing while idle.
FLUSH_CHECK_S = 0.05
# One call that sends observations and brings the plans back: a Validator that
# takes longer is restarting or overloaded, so the observations are counted as
# dropped rather than piling up behind it, and the router keeps its last plan
# (fail static) until the next call.
SYNC_TIMEOUT_S = 5.0
# A router writes at most one line about dropped observations per this many
# seconds: a Validator down for an hour makes every request drop one, and the log
# needs to say when and how many, not each. rayfleet_observations_dropped_total
# counts every one.
DROPS_LOG_EVERY_S = 30.0
# One replica's counters: they are running totals, so a late report is superseded
# by the next one and need not be waited for longer than the usual report period.
REPLICA_REPORT_TIMEOUT_S = 5.0

# -- readiness ----------------------------------------------------------------
# serve.status() is a blocking call to Serve's controller: its answer is reused
# for this long. A router answers readiness probes (several a second under
# Kubernetes and load balancers), so it asks often but briefly; the Validator
# asks once per rollout evaluation, whose steps last minutes.
ROUTER_READY_CACHE_S = 1.0
VALIDATOR_READY_CACHE_S = 2.0

# -- Validator ----------------------------------------------------------------
# Rollout evaluation period when no model has a rollout (so no
# ``rollout.evaluate_every_s``): the loop still sends events and refreshes
# readiness, and nothing depends on it being faster.
DEFAULT_EVALUATE_EVERY_S = 5.0
# ``GET /-/validation`` without ``window_s``: five minutes, as
# ValidatorCore.snapshot's own default.
DEFAULT_VALIDATION_WINDOW_S = 300.0

# -- deployments --------------------------------------------------------------
# Model calls a replica runs at once when it does not batch: the two that
# Serve's old default of max_ongoing_requests allowed; the rest queue in order.
UNBATCHED_CONCURRENCY = 2
# How often a replica being removed checks whether it still holds requests.
SHUTDOWN_WAIT_LOOP_S = 2.0
# Added to the request deadline for a replica's graceful shutdown: one wait loop
# and the time to send the last answers back, so a request already routed to a
# replica being removed is never cut.
SHUTDOWN_SLACK_S = 4.0
# The router's autoscaling target for a spec that sets the router's autoscaling
# but not its target: the same as the default RouterSpec.autoscaling.
ROUTER_TARGET_ONGOING_REQUESTS = 64.0
# Calls the router makes for one request to a version's replicas. A replica that
# dies mid-request (killed, out of memory, its node lost) takes the request with
# it; inference has no side effects, so it is sent once more, and Serve's handle,
# which has by then taken the dead replica out of its set, picks a live one.
REPLICA_CALL_ATTEMPTS = 2
# How often a router asks a direct-transport version's replicas for their
# channels: a new replica takes calls within about this long, and one Serve
# stopped takes none after it (it answers GOING_AWAY meanwhile).
CHANNEL_DISCOVER_EVERY_S = 1.0
CHANNEL_DISCOVER_TIMEOUT_S = 5.0
# How often a pool replica tells Serve's controller which versions it holds,
# when that changed: Serve's own interval for @serve.multiplexed, so routing to
# a replica that is loading a version starts as early as Serve's would.
POOL_ROUTING_PUSH_S = 0.1
# And unchanged, how often it says so again: Serve's controller keeps what each
# replica holds in memory only, and a restarted one would otherwise route pooled
# versions to any replica until their holdings next change.
POOL_ROUTING_REFRESH_S = 10.0
# While the controller cannot be told, one warning per this many seconds.
POOL_ROUTING_WARN_EVERY_S = 60.0
# The longest a pool replica waits between looks for versions idle past the
# pool's unload_after_s (it looks four times per unload_after_s when shorter).
POOL_IDLE_CHECK_S = 5.0
