"""Who holds which state slot, on the engine thread: the requests waiting for slots, the sessions running in
them, the chooses requests, the free slots; and how a session lets go of its slot (done, cancelled, failed),
keeping its final state in the prefix cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.chooses import ScoringQueue
from backend.engine_protocol import StepEngine
from backend.messages import Failed, SaveState, StateSaved, Submit, Update, Updated
from backend.metrics import SchedulerMetrics
from backend.sessions import Session, Status
from backend.state_cache import StateCache
from backend.state_registry import SHARED, Namespace, StateRegistry


@dataclass
class Group:
    """The branches of one request: branch 0 prefills, the others fork its state when the prompt is in."""

    submit: Submit
    sessions: list[Session]
    initial: str | None = None  # the initial state its slot started from ("": zero); None: a saved state
    checkpoints: list[int] = field(default_factory=list)  # prompt positions still to keep a state at, ascending


class Slots:
    def __init__(self, max_batch: int, cache: StateCache, registry: StateRegistry,
                 metrics: SchedulerMetrics) -> None:  # fmt: skip
        self.max_batch, self.cache, self.registry, self.metrics = max_batch, cache, registry, metrics
        self.engine: StepEngine | None = None  # set by the scheduler once loaded (and at each model swap)
        self.free = list(range(max_batch - 1, -1, -1))
        self.waiting: list[Group] = []
        self.groups: dict[str, Group] = {}
        self.running: list[Session] = []  # admission order
        self.scoring = ScoringQueue()  # chooses requests, waiting for or holding slots

    @property
    def idle(self) -> bool:
        return not (self.running or self.waiting or self.scoring)

    @property
    def busy(self) -> int:
        """Generations running or waiting for a slot."""
        return len(self.running) + sum(len(g.sessions) for g in list(self.waiting))

    def occupied(self) -> bool:
        """Some session or scoring request holds a slot (a draining admin message waits for none)."""
        return bool(self.running or self.scoring.running)

    def cancel(self, id: str) -> None:
        self.scoring.cancel(id, self.free)
        group = self.groups.get(id)
        if group is None:
            return
        if group in self.waiting:
            self.waiting.remove(group)
        for s in group.sessions:
            if s.status is not Status.FINISHED:
                s.finish("cancelled")
                self.release(s)

    def update(self, msg: Update) -> None:
        group = self.groups.get(msg.id)
        if group is None:
            return
        changes = dict(msg.changes)
        for s in group.sessions:
            s.update(changes)
        first = group.sessions[0]
        first.submit.sink.put(Updated(msg.id, first.params, len(first.out_tokens)))

    def save_state(self, msg: SaveState) -> None:
        """Snapshot a live branch's slot, or a finished branch's state still held by the prefix cache."""
        engine = self._engine()
        group = self.groups.get(msg.id)
        state = None
        mine = lambda tenant: msg.tenant in (SHARED, tenant)  # noqa: E731 -- another key's generation: unknown
        if group is not None and msg.branch < len(group.sessions) and mine(group.submit.tenant):
            s = group.sessions[msg.branch]
            if s.slot >= 0 and s.status is not Status.WAITING:
                state = engine.read_slot(s.slot)
        elif (finished := self.registry.finished((msg.id, msg.branch))) is not None and mine(finished[0][0]):
            state = self.cache.read(finished[1], finished[0], engine)
        if state is None:
            msg.sink.put(Failed(msg.id, "unknown_id", f"no state to save for '{msg.id}' branch {msg.branch}", "id"))
            return
        handle = self.registry.store(state, msg.tenant)
        msg.sink.put(StateSaved(msg.id, handle, sum(a.nbytes for a in state)))

    def fail(self, msg: Submit | SaveState, message: str) -> None:
        """A bug met while applying `msg`: that request ends (with its Done, if it had begun), nothing else."""
        group = self.groups.get(msg.id) if isinstance(msg, Submit) else None
        if group is not None and group.submit is msg:
            if group in self.waiting:
                self.waiting.remove(group)
            self.end_group_on_error(group.sessions[0], message)
        else:
            msg.sink.put(Failed(msg.id, "internal", message, None))

    def cache_namespace(self, s: Session) -> Namespace | None:
        group = self.groups.get(s.id)
        return None if group is None else self.group_namespace(group)

    def group_namespace(self, group: Group) -> Namespace | None:
        """The state-cache namespace of a request: its API key's tenant (so no key learns from `cached_tokens`
        what another sent) and the state it started from: an initial state's number, or the saved-state handle
        (so a conversation carried on from a handle reuses its own turns); None when it cannot be cached."""
        sub = group.submit
        if group.initial is None:
            return None if sub.state is None else (sub.tenant, f"saved:{sub.state}")
        ns = self.registry.initial_states.get(group.initial)
        return None if ns is None else (sub.tenant, ns)

    def to_checkpoint(self, s: Session) -> int:
        """Prompt tokens to feed before the next checkpoint (a chunk stops there so its state can be kept)."""
        checkpoints = self.groups[s.id].checkpoints
        return checkpoints[0] - s.n_fed if checkpoints else len(s.prompt)

    def checkpoint_prompt(self, s: Session) -> None:
        """The prompt's first n_fed tokens are in the slot: keep the state if a checkpoint is here."""
        checkpoints = self.groups[s.id].checkpoints
        while checkpoints and checkpoints[0] <= s.n_fed:
            if checkpoints.pop(0) == s.n_fed and (ns := self.cache_namespace(s)) is not None:
                self.checkpoint(s.prompt[: s.n_fed], ns, s.slot)

    def checkpoint(self, tokens: tuple[int, ...], ns: Namespace, slot: int) -> None:
        """Keep the state in `slot` (after `tokens`) in the cache."""
        if self.cache.checkpoint(tokens, ns, self._engine(), slot):
            self.metrics.cache_stored(self.cache)

    def release(self, s: Session, send_done: bool = True, error: str | None = None) -> None:
        """Free the session's slot now (keeping its final state in the prefix cache) and send its Done."""
        if s.slot >= 0:
            ns = self.cache_namespace(s)
            if ns is not None and s.out_tokens and s.finish_reason != "error":
                fed = s.fed_tokens  # the end of a generation: where the conversation's next turn starts
                self.checkpoint(fed, ns, s.slot)
                self.registry.remember_finished((s.id, s.branch), ns, fed)
            self.free.append(s.slot)
            s.slot = -1
        if s in self.running:
            self.running.remove(s)
        if send_done:
            s.submit.sink.put(s.done(error))
        self.metrics.ended(s)
        group = self.groups.get(s.id)
        if group is not None and all(b.status is Status.FINISHED for b in group.sessions):
            del self.groups[s.id]
        self.observe_occupancy()

    def observe_occupancy(self) -> None:
        waiting = sum(len(g.sessions) for g in self.waiting)
        self.metrics.occupancy(len(self.running), waiting, self.max_batch - len(self.free), self.max_batch)

    def end_group_on_error(self, s: Session, message: str) -> None:
        group = self.groups.get(s.id)
        for b in group.sessions if group else [s]:
            if b.status is not Status.FINISHED:
                b.finish("error")
                self.release(b, error=message)

    def finish_all(self, reason: str) -> None:
        for group in list(self.groups.values()):
            for s in group.sessions:
                if s.status is not Status.FINISHED:
                    s.finish(reason)
                    self.release(s)
        self.waiting.clear()
        self.scoring.fail_all(self.free, "the engine stopped")

    def _engine(self) -> StepEngine:
        assert self.engine is not None, "no engine loaded"
        return self.engine
