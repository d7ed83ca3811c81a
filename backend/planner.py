"""The scheduler's policies, on the engine thread: admit requests into state slots, plan each step within the
token budget, run it, and deliver its tokens to the sessions.

Each step carries one decode token for every running session plus prefill chunks of waiting prompts (and chooses'
rows), in admission order. How many prompt tokens a step carries is backend/step_budget.py's policy: while any
stream decodes, as many as keep the step (the gap between two of a stream's tokens) predicted under
`decode_gap_ms` from the measured durations of recent steps, between a quarter of `token_chunk_size` (so a long
prompt always progresses) and `max_prefill_chunk` less the decode rows; while none decodes, up to
`max_prefill_chunk` at once, held to a step predicted within ten decode gaps (a request arriving meanwhile waits
for it), never under `token_chunk_size`. The engine is built for max(token_chunk_size + max_batch,
max_prefill_chunk) tokens a step ("auto": as much as memory allows, gpu/step_room.py; the planner then gets None
and takes the engine's room), and each token of room costs ~(16 n_embd + n_ffn) floats of workspace
(gpu/workspace.py): v7 1.6B ~165 KB, so 1,024 tokens ~160 MiB (~140 more than 136); 7B ~330 KB a token; the demo
model 20 KB (188 -> 208 MiB at CI's sizes). Its logit lines stay at token_chunk_size + max_batch (each is 2 x
n_vocab floats with its readback, 512 KiB for the World vocab; a prefill step needs one). Requests are admitted in
arrival order, one slot per branch; a finished or cancelled session frees its slot at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from backend.checkpoints import TurnEnds, checkpoint_positions
from backend.chooses import ChooseRun, lines_of
from backend.engine_protocol import StepEngine
from backend.gpu.step_types import Drawn, Logits, StepPlan, StepRow
from backend.grammar import GrammarError
from backend.messages import (
    Embedded,
    Failed,
    Score,
    Started,
    Submit,
    batched_delivery,
)
from backend.metrics import SchedulerMetrics, StepStats
from backend.sessions import Session, Status
from backend.slots import Group, Slots
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from backend.step_budget import StepBudget
from backend.tokenizer import Tokenizer

log = logging.getLogger("ai00.scheduler")


class Planner:
    def __init__(self, tokenizer: Tokenizer, *, max_batch: int, token_chunk_size: int, max_queue: int,
                 cache: StateCache, registry: StateRegistry, metrics: SchedulerMetrics, checkpoint_every: int = 512,
                 max_prefill_chunk: int | None = 0, decode_gap_ms: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.tokenizer, self.max_batch, self.token_chunk_size, self.max_queue = (
            tokenizer, max_batch, token_chunk_size, max_queue)  # fmt: skip
        self.cache, self.registry, self.metrics = cache, registry, metrics
        self.checkpoint_every = checkpoint_every
        self.step_budget = StepBudget(token_chunk_size, max_prefill_chunk, decode_gap_ms)
        self.clock = clock  # what step durations are measured with (tests give a fake one)
        self.turn_ends = TurnEnds(tokenizer) if cache.enabled else None  # 17 ms over the World vocab, once
        self.slots = Slots(max_batch, cache, registry, metrics)
        self.held = False  # a draining admin message waits: admit nothing new
        self._stats = StepStats(log)

    @property
    def engine(self) -> StepEngine | None:
        return self.slots.engine

    @engine.setter
    def engine(self, engine: StepEngine | None) -> None:
        self.slots.engine = engine
        self.step_budget.times.reset()

    # ---- requests in ----

    def accept_score(self, msg: Score) -> None:
        """A chooses request waits, like a generation, for one free slot per choice."""
        self.metrics.requests.labels("chooses").inc()
        if len(msg.choices) > self.max_batch:
            return msg.sink.put(Failed(msg.id, "invalid_request", f"choices: at most max_batch ({self.max_batch})",
                                       "choices"))  # fmt: skip
        if msg.state is not None and not self.registry.knows(msg.state, msg.tenant):
            message = f"state: '{msg.state}' is neither a loaded initial state nor a saved-state handle"
            return msg.sink.put(Failed(msg.id, "invalid_request", message, "state"))
        queued = len(self.slots.waiting) + len(self.slots.scoring.waiting)
        if queued >= self.max_queue and len(msg.choices) > len(self.slots.free):
            return msg.sink.put(Failed(msg.id, "overloaded", "all slots and the queue are full, retry later", None))
        self.slots.scoring.waiting.append(msg)
        self.admit_waiting()

    def accept_submit(self, sub: Submit) -> None:
        self.metrics.requests.labels("embed" if sub.embed else "generate").inc()
        if sub.id in self.slots.groups:
            return self.reject(sub, "duplicate_id", f"id '{sub.id}' is already live", "id")
        if sub.n > self.max_batch:
            return self.reject(sub, "invalid_request", f"n: must be <= max_batch ({self.max_batch})", "n")
        if sub.state is not None and not self.registry.knows(sub.state, sub.tenant):
            message = f"state: '{sub.state}' is neither a loaded initial state nor a saved-state handle"
            return self.reject(sub, "invalid_request", message, "state")
        self.admit_waiting()  # slots freed by the last step go to those already waiting before we judge the queue
        if len(self.slots.waiting) >= self.max_queue and not (not self.slots.waiting and sub.n <= len(self.slots.free)):
            return self.reject(sub, "overloaded", "all slots and the queue are full, retry later", None)
        group = Group(sub, [Session(sub, b, self.tokenizer, sub.params) for b in range(sub.n)])
        self.slots.groups[sub.id] = group
        self.slots.waiting.append(group)
        self.admit_waiting()  # at once, so the queue holds only what truly waits for a slot

    def reject(self, sub: Submit, code: str, message: str, param: str | None) -> None:
        self.metrics.rejected.labels(code).inc()
        sub.sink.put(Failed(sub.id, code, message, param))

    # ---- admission ----

    def admit_waiting(self) -> None:
        """Give slots to waiting requests in arrival order; a request needs one slot per branch."""
        if self.held:  # a model swap waits for the running ones to end
            return
        self.slots.scoring.admit(self.slots.free, self._score_start, self._engine().copy_slot)
        while self.slots.waiting and self.slots.waiting[0].submit.n <= len(self.slots.free):
            group = self.slots.waiting.pop(0)
            sub, first = group.submit, group.sessions[0]
            saved = self.registry.saved(sub.state, sub.tenant) if sub.state is not None else None
            group.initial = None if saved is not None else self.initial_state_of(sub)
            if saved is None and group.initial not in self.registry.initial_states:  # unloaded while it waited
                del self.slots.groups[sub.id]
                self.reject(sub, "invalid_request", f"state: '{sub.state}' is no longer loaded", "state")
                continue
            slots = [self.slots.free.pop() for _ in group.sessions]
            try:
                cached, tier = self._start_slot(group, slots[0], saved)
            except Exception as e:  # this request fails; the slots go back and the others go on
                log.exception("starting generation %s failed", sub.id)
                self.slots.free.extend(slots)
                del self.slots.groups[sub.id]
                self.reject(sub, "internal", f"internal error: {e}", None)
                continue
            for s, slot in zip(group.sessions, slots, strict=True):
                s.grant(slot, cached)
            if self.cache.enabled:
                group.checkpoints = checkpoint_positions(sub.tokens, cached, self.checkpoint_every,
                                                         self.turn_ends, self.cache.min_tokens)  # fmt: skip
            self.slots.running.extend(group.sessions)
            self.metrics.admitted(sub, cached, looked_up=self.cache.enabled, tier=tier)
            sub.sink.put(Started(sub.id, len(sub.tokens), cached, first.params))
        self.slots.observe_occupancy()

    def _engine(self) -> StepEngine:
        assert self.engine is not None, "no engine loaded"
        return self.engine

    def _score_start(self, msg: Score) -> Callable[[int], None] | str:
        """How a chooses request's first slot gets its starting state, or why it cannot."""
        engine = self._engine()
        if msg.state is not None and (saved := self.registry.saved(msg.state, msg.tenant)) is not None:
            return lambda slot: engine.write_slot(slot, saved)
        state_id = msg.state if msg.state is not None else self.registry.default_state
        if state_id not in self.registry.initial_states:
            return f"state: '{msg.state}' is no longer loaded"
        return lambda slot: engine.reset_slot(slot, state_id)

    def _start_slot(self, group: Group, slot: int, saved: list[np.ndarray] | None) -> tuple[int, str | None]:
        """Put the request's starting state in its first slot: the prompt tokens it already holds, and the
        cache tier they came from."""
        engine, ns = self._engine(), self.slots.group_namespace(group)
        if ns is not None and (hit := self.cache.lookup(group.submit.tokens, ns)) is not None:
            self.cache.restore(hit, engine, slot)
            return hit.depth, hit.tier
        if saved is not None:
            engine.write_slot(slot, saved)
        else:
            engine.reset_slot(slot, group.initial)
        return 0, None

    def initial_state_of(self, sub: Submit) -> str:
        """The initial state a submit starts from when it names no saved state (embeddings: always zero)."""
        return sub.state if sub.state is not None else "" if sub.embed else self.registry.default_state

    # ---- one step ----

    def plan_step(self) -> tuple[StepPlan, list[Session | ChooseRun], list[Session]]:
        """One decode token per decoding session, then prompt chunks in admission order within the budget;
        a draw for every session whose next token comes out of this step (all branches of a finished prompt)."""
        rows: list[StepRow] = []
        owners: list[Session | ChooseRun] = []
        draws, drawers, failed = [], [], []

        def draw(s: Session, row: int) -> None:
            try:
                draws.append(s.draw(row))
                drawers.append(s)
            except GrammarError as e:  # the grammar has no way on: end this branch after planning
                failed.append((s, f"grammar: {e}"))

        for s in self.slots.running:
            if s.status is Status.DECODE:
                rows.append(StepRow(s.slot, (s.out_tokens[-1],), Logits.LAST))
                owners.append(s)
                draw(s, len(rows) - 1)
        budget = self.step_budget.prompt_tokens(len(rows), self._engine().max_step_tokens)
        for s in self.slots.running:
            if s.status is not Status.PREFILL or s.branch != 0 or budget <= 0:
                continue
            take = min(len(s.prompt) - s.n_fed, budget, self.slots.to_checkpoint(s))
            last = s.n_fed + take == len(s.prompt)
            logits = Logits.LAST if last and not s.submit.embed else Logits.NONE
            rows.append(StepRow(s.slot, s.prompt[s.n_fed : s.n_fed + take], logits))
            owners.append(s)
            budget -= take
            if logits is Logits.LAST:
                for b in self.slots.groups[s.id].sessions:
                    if b.status is not Status.FINISHED:
                        draw(b, len(rows) - 1)
        # scoring (chooses) shares the prompts' budget; its logit lines (a vocabulary-wide head each, the cost
        # of a step on small GPUs) are held to max_batch per step, what a full decode step computes
        lines = sum(lines_of(r) for r in rows)
        for row, run in self.slots.scoring.rows(budget, min(self._engine().max_logit_lines - lines, self.max_batch)):
            rows.append(row)
            owners.append(run)
        for s, message in failed:
            if s.status is Status.PREFILL:  # its prompt row is in the plan: branches wait on it, so all end
                self.slots.end_group_on_error(s, message)
            elif s.status is not Status.FINISHED:
                s.finish("error")
                self.slots.release(s, error=message)
        return StepPlan(tuple(rows), tuple(draws)), owners, drawers

    def run_step(self, plan: StepPlan, owners: list[Session | ChooseRun], drawers: list[Session]) -> None:
        t0 = self.clock()
        try:
            result = self._engine().step(plan)
        except Exception as e:  # fail this step's sessions, keep serving the rest
            log.exception("engine step failed (%d rows)", len(plan.rows))
            for s in owners:
                if isinstance(s, ChooseRun):
                    self.slots.scoring.end(s, self.slots.free, Failed(s.msg.id, "internal", f"engine step failed: {e}"))
                else:
                    self.slots.end_group_on_error(s, f"engine step failed: {e}")
            return
        drawn = dict(zip(drawers, result.drawn, strict=True))
        scored: dict[ChooseRun, list[np.ndarray]] = {}
        with batched_delivery():  # the step's events reach each event loop in one wake-up
            for r, (row, s) in enumerate(zip(plan.rows, owners, strict=True)):
                if isinstance(s, ChooseRun):
                    scored.setdefault(s, []).append(result.of_row(r, lines_of(row)))
                    continue
                if s.status is Status.FINISHED:  # its grammar failed while planning
                    continue
                try:
                    self._deliver(s, row, drawn)
                except Exception as e:  # a bug in one generation ends it with `error`; the others go on
                    log.exception("generation %s failed", s.id)
                    self.slots.end_group_on_error(s, f"internal error: {e}")
            for run, lines in scored.items():
                try:
                    if run.took(lines):
                        self.slots.scoring.end(run, self.slots.free)
                except Exception as e:
                    log.exception("chooses %s failed", run.msg.id)
                    self.slots.scoring.end(run, self.slots.free, Failed(run.msg.id, "internal", f"internal error: {e}"))
        dt = self.clock() - t0
        self.metrics.step_seconds.observe(dt)
        self.metrics.step_rows.observe(len(plan.rows))
        self.metrics.step_tokens.observe(plan.n_tokens)
        self._stats.record(len(plan.rows), plan.n_tokens, dt)
        self.step_budget.record(plan.n_tokens, dt)

    def _deliver(self, s: Session, row: StepRow, drawn: dict[Session, Drawn]) -> None:
        """Row of a step's result to its session: more prompt fed, or the GPU's token taken."""
        if s.status is Status.PREFILL:
            s.n_fed += len(row.tokens)
            self.metrics.prompt_tokens.inc(len(row.tokens))
            self.slots.checkpoint_prompt(s)
            if s.n_fed == len(s.prompt):
                self._prompt_done(s, drawn)
        else:
            self._take(s, drawn[s])

    def _prompt_done(self, first: Session, drawn: dict[Session, Drawn]) -> None:
        """The prompt is in branch 0's slot: cache its state, embed or fork the branches, give each its token."""
        engine, group = self._engine(), self.slots.groups[first.id]
        if first.submit.embed:
            self._embed(first)
            return
        for s in group.sessions[1:]:
            if s.slot >= 0:
                engine.copy_slot(first.slot, s.slot)
                s.n_fed = len(s.prompt)
        for s in group.sessions:
            if s in drawn and s.status is not Status.FINISHED:
                self._take(s, drawn[s])

    def _embed(self, s: Session) -> None:
        """Last-token pooling: the final layer's channel-mix input (ln2 output), L2-normalized."""
        engine = self._engine()
        state = engine.read_slot(s.slot)[-1].reshape(-1)
        n_embd = engine.info.n_embd
        vec = state[n_embd : 2 * n_embd].astype(np.float64)  # layout: att_x_prev [C], ffn_x_prev [C], ...
        vec /= max(float(np.linalg.norm(vec)), 1e-12)
        s.submit.sink.put(Embedded(s.id, tuple(vec.tolist()), len(s.prompt)))
        s.finish_reason, s.status = "stop", Status.FINISHED
        self.slots.release(s, send_done=False)

    def _take(self, s: Session, drawn: Drawn) -> None:
        delta = s.take(drawn)
        self.metrics.token(s)
        if delta is not None:
            s.submit.sink.put(delta)
        if s.status is Status.FINISHED:
            self.slots.release(s)
