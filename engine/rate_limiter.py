"""Triton's rate limiter (`--rate-limit=execution_count`): an instance runs a batch only while the
resources its instance group names are free, across every model of the server.

Each instance holds a `Ticket`: the resources it needs (per device, or `global` across the server), its
group's priority and how many batches it has run. The server has, of each resource, the most any loaded
instance needs, or what `--rate-limit-resource NAME:COUNT[:DEVICE]` gives (then a resource no flag names
has none, and a model that needs more than there is fails to load, in Triton's words). Instances waiting
for resources are served lowest `batches run x max(priority, 1)` first (then the lower priority), so a
priority-2 instance gets half the turns of a priority-1 one; only the first in that order may take resources
(as Triton: a big waiter is not overtaken forever by small ones). Only Python-backend models take tickets
so far; a model of several instances waits for one chosen instance's turn at a time. An instance that finishes with work still queued joins the
waiters at once, so its next turn is weighed against the others before they take the freed resources.
A rate-limited instance takes one batch at a time (as Triton's): one queued behind a running batch would
wait for resources its own instance holds, and stand first in line while it could not run.

Off (the default), no instance has a ticket and the engine's path is unchanged. Everything here runs on
the server's event loop: no locks.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from gpuserve.errors import InvalidSettings

GLOBAL = "global"
Key = Tuple[object, str]  # (device id or GLOBAL, resource name)


class Ticket:
    """One instance's place with the limiter."""

    __slots__ = ("limiter", "name", "needs", "priority", "runs", "holding", "granted", "waiter", "staged")

    def __init__(self, limiter: "RateLimiter", name: str, needs: Dict[Key, int], priority: int):
        self.limiter = limiter
        self.name = name
        self.needs = needs
        self.priority = max(int(priority), 1)  # as Triton: 0 counts as 1
        self.runs = 0
        self.holding = 0  # batches running (or about to) on resources taken for them
        self.granted = 0  # resources taken for a batch the instance has not formed yet
        self.waiter: Optional[asyncio.Future] = None
        self.staged: Optional[int] = None  # its place in the waiting order (staging sequence), or None

    async def acquire(self) -> None:
        """Wait until this instance's resources are taken for its next batch."""
        await self.limiter.acquire(self)

    def release(self, pending: bool) -> None:
        """The batch is done; `pending`: the model still has requests queued for this instance."""
        self.limiter.release(self, pending)


def parse_resources(specs: Iterable[str]) -> List[Tuple[str, int, Optional[int]]]:
    """`--rate-limit-resource` values, NAME:COUNT or NAME:COUNT:DEVICE."""
    out = []
    for spec in specs or ():
        parts = str(spec).split(":")
        try:
            if len(parts) not in (2, 3) or not parts[0]:
                raise ValueError
            out.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
        except ValueError:
            raise InvalidSettings(f"--rate-limit-resource '{spec}': expected <name>:<count> or "
                                  "<name>:<count>:<device>") from None
    return out


class RateLimiter:
    def __init__(self, resources: Sequence[Tuple[str, int, Optional[int]]] = ()):
        self.explicit = list(resources)
        self.tickets: List[Ticket] = []
        self.limits: Dict[Key, int] = {}
        self.taken: Dict[Key, int] = {}
        self._order = itertools.count()
        self._loop: Optional[asyncio.AbstractEventLoop] = None  # the server's, seen by the first wait

    # loading -------------------------------------------------------------------------------------
    def tickets_for(self, model: str, groups: Sequence[dict], device: int = 0) -> List[Ticket]:
        """One ticket per instance of `groups` (config.pbtxt instance groups, each with its `count`), checked
        against the server's resources; raises InvalidSettings (the model does not load) as Triton does."""
        tickets = []
        for group in groups:
            limiter = group.get("rate_limiter") or {}
            needs: Dict[Key, int] = {}
            for resource in limiter.get("resources") or []:
                key = (GLOBAL if resource.get("global") in (True, "true", "True", 1) else device, str(resource["name"]))
                needs[key] = int(resource.get("count", 0))
            for _ in range(int(group.get("count", 1))):
                tickets.append(Ticket(self, model, needs, int(limiter.get("priority", 0) or 0)))
        self.register(tickets)
        return tickets

    def register(self, tickets: List[Ticket]) -> None:
        limits = self._limits(self.tickets + tickets)
        self.tickets.extend(tickets)
        self.limits = limits

    def unregister(self, tickets: Iterable[Ticket]) -> None:
        gone = set(map(id, tickets))
        for ticket in tickets:  # taken for batches never formed: free again (running ones give theirs back)
            for _ in range(ticket.granted):
                for key, count in ticket.needs.items():
                    self.taken[key] -= count
            ticket.granted, ticket.staged = 0, None
        self.tickets = [t for t in self.tickets if id(t) not in gone]
        self.limits = self._limits(self.tickets)
        loop = self._loop
        if loop is not None and not loop.is_closed():  # an unload may run off the loop: wake waiters there
            loop.call_soon_threadsafe(self._grant)

    def _limits(self, tickets: List[Ticket]) -> Dict[Key, int]:
        most: Dict[Key, int] = {}
        for ticket in tickets:
            for key, count in ticket.needs.items():
                most[key] = max(most.get(key, 0), count)
        global_names = {name for (where, name) in most if where == GLOBAL}
        for (where, name) in most:
            if where != GLOBAL and name in global_names:
                raise InvalidSettings(f'Resource "{name}" is present as both global and device-specific resource '
                                      "in the model configuration.")
        if not self.explicit:
            return most
        limits = {}
        for (where, name), need in most.items():
            given = [count for (n, count, dev) in self.explicit
                     if n == name and (where == GLOBAL or dev is None or dev == where)]
            have = max(given, default=0)  # as Triton: a resource no flag names has none
            if have < need:
                raise InvalidSettings(f'Resource count for "{name}" is limited to {have} which will prevent '
                                      "scheduling of one or more model instances, the minimum required count "
                                      f"is {need}")
            limits[(where, name)] = have
        return limits

    # running -------------------------------------------------------------------------------------
    def _fits(self, ticket: Ticket) -> bool:
        return all(self.taken.get(key, 0) + count <= self.limits.get(key, 0) for key, count in ticket.needs.items())

    def _take(self, ticket: Ticket) -> None:
        for key, count in ticket.needs.items():
            self.taken[key] = self.taken.get(key, 0) + count

    def _stage(self, ticket: Ticket) -> None:
        if ticket.staged is None:
            ticket.staged = next(self._order)

    def _grant(self) -> None:
        """Serve the waiters in Triton's order while the first of them fits."""
        while True:
            staged = [t for t in self.tickets if t.staged is not None]
            if not staged:
                return
            first = min(staged, key=lambda t: (t.runs * t.priority, t.priority, t.staged))
            if not self._fits(first):
                return
            self._take(first)
            first.staged = None
            if first.waiter is not None and not first.waiter.done():
                first.holding += 1
                first.waiter.set_result(None)
                first.waiter = None
            else:
                first.granted += 1

    async def acquire(self, ticket: Ticket) -> None:
        if ticket.granted:
            ticket.granted -= 1
            ticket.holding += 1
            return
        self._loop = loop = asyncio.get_running_loop()
        waiter = ticket.waiter = loop.create_future()
        self._stage(ticket)
        self._grant()
        try:
            await waiter
        except asyncio.CancelledError:  # the model's loop stops: give back what was taken for it
            if ticket.waiter is waiter:
                ticket.waiter = None
                ticket.staged = None
            elif waiter.done() and not waiter.cancelled():
                self.release(ticket, False)
            raise

    def release(self, ticket: Ticket, pending: bool) -> None:
        ticket.holding -= 1
        ticket.runs += 1
        for key, count in ticket.needs.items():
            self.taken[key] -= count
        if pending:
            self._stage(ticket)
        self._grant()


_LIMITER: Optional[RateLimiter] = None


def configure(mode: Optional[str], resources: Iterable[str] = ()) -> None:
    """The server's `--rate-limit` (off | execution_count) and `--rate-limit-resource` values."""
    global _LIMITER
    mode = (mode or "off").lower()
    if mode not in ("off", "execution_count"):
        raise InvalidSettings(f"--rate-limit '{mode}': expected off or execution_count")
    _LIMITER = RateLimiter(parse_resources(resources)) if mode == "execution_count" else None


def limiter() -> Optional[RateLimiter]:
    return _LIMITER
