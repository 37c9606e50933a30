"""A step of load against a live rayfleet app, once per autoscaling policy.

    .venv/bin/python -m loadtest.step_load [--phases 20:1,60:32,100:4]
        [--policies rayfleet serve] [--target-ongoing-requests 4] [--max-replicas 8]
        [--hold-ms 0]

For each policy, in turn and on the same profile:

1. a server process starts a local Ray (``num_cpus=8``) and Serve on a free
   loopback port, serving the digits demo model (``v1``, built into a temporary
   store; with ``--hold-ms``, each model call is held that long without using a
   CPU, as on an accelerator) with that policy's ``autoscaling_config``, and
   samples every second how
   many replicas of each version run, start and stop (``serve.status()``);
2. a load process at ``nice 19`` (Ray's workers run at 15) drives it with locust's
   library API: closed-loop users from ``loadtest/locustfile.py`` with no think
   time, so the requests in flight track the user count, following the step
   profile (``seconds:users`` phases), and records every request;
3. the server is told to stop (a stop file: Ray owns the driver's SIGTERM), shuts
   Serve and Ray down, and is killed by its pid only if it hangs.

Then it writes, under ``--out`` (``loadtest/out/step_load``): per policy a CSV of
every second (users, client in-flight, replicas per version, requests/s, p50, p99,
failures), the raw requests and the server log; ``step_load.png`` with users,
replicas and latency over time for all policies; and ``summary.md``, the
comparison table it also prints: seconds from the step until a first replica is
added and until enough run, p99 during the step, direction changes of the replica
count in each phase, seconds until the count is back down after the load drops,
the slowest request from then on, failed requests.

"Enough replicas" is ``ceil(users / target_ongoing_requests)``, capped at the
maximum: what the clients ask for. On a small machine the deployment itself may
never see that many requests (the proxy and the router queue some on their own
CPU), so read it with the replica count the run did reach. The app's versions name
their policy in ``autoscaling.policy``, the way a config file does (``rayfleet`` or
``serve``); the run stops at once if the spec does not have that field yet.
Loopback only; every phase is bounded and the whole run stops by itself. Needs
matplotlib (a dev dependency).

The package: ``profile`` (the phases of load), ``server`` and ``load`` (the two
child processes), ``run`` (one server and one load per policy, then the report),
``report`` (timelines, the comparison numbers, the table and the plot).
"""

__all__: list[str] = []
