"""Long-running loops beside request handling: started once, watched, cancelled.

Routers send observations and fetch plans, replicas report their counters, the
Validator evaluates rollouts and runs validation jobs: each is a coroutine that
should run as long as its owner does. :class:`BackgroundTasks` starts each under
a name at most once at a time (a loop that ended is started again on the next
:meth:`~BackgroundTasks.start`), logs a loop that dies of an exception instead
of letting it vanish unnoticed, and cancels them all when the owner shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BackgroundTasks"]

logger = logging.getLogger("ray.serve")

Loop = Callable[[], Coroutine[Any, Any, None]]


class BackgroundTasks:
    """The background loops of one owner (a router, a replica, the Validator).

    Call :meth:`start` from the event loop the tasks should run on; :meth:`cancel`
    may be called from any thread (Serve may run a replica's ``__del__`` in one).
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, loop: Loop) -> asyncio.Task[None]:
        """Run ``loop()`` as the task ``name`` unless that task is still running."""
        task = self._tasks.get(name)
        if task is not None and not task.done():
            return task
        task = asyncio.get_running_loop().create_task(
            loop(), name=f"{self.owner}: {name}"
        )
        task.add_done_callback(self._ended)
        self._tasks[name] = task
        return task

    def running(self) -> list[str]:
        """Names of the tasks not yet done."""
        return [name for name, task in self._tasks.items() if not task.done()]

    def cancel(self) -> None:
        """Cancel every task; safe from any thread, and after the loop closed."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for task in self._tasks.values():
            loop = task.get_loop()
            if task.done() or loop.is_closed():
                continue
            if loop is current:
                task.cancel()
                continue
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed between the check and the call
                continue

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error(
                "background task %r died; it restarts only if started again",
                task.get_name(),
                exc_info=error,
            )
        else:
            logger.warning("background task %r returned", task.get_name())
