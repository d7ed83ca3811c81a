"""The engine thread: drain inbox -> admit -> plan one step -> engine.step -> sample -> deliver.

This is the only place where requests meet the engine. Every Session lives here; handlers only see the
frozen messages of `messages.py`. Each step carries one decode token for every running session plus
prefill chunks of waiting prompts, up to `token_chunk_size` tokens. Admin work (LoRA switch, initial states,
model swap) arrives as EngineCall and runs between two steps; a draining one holds admissions until nothing runs.
"""

from __future__ import annotations

import functools
import gc
import itertools
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.chooses import ChooseRun, lines_of
from backend.gpu.step_types import Drawn, Logits, StepPlan, StepRow
from backend.grammar import GrammarError
from backend.messages import (
    Cancel,
    Embedded,
    EngineCall,
    Failed,
    SaveState,
    Score,
    Started,
    StateSaved,
    Submit,
    Update,
    Updated,
    batched_delivery,
)
from backend.metrics import SchedulerMetrics
from backend.sessions import Session, Status
from backend.state_cache import StateCache
from backend.tokenizer import Tokenizer

log = logging.getLogger("ai00.scheduler")

_STOP = object()
_SAVED_STATES = 64  # saved-state handles kept in host memory
SHARED = "*"  # the tenant that sees every saved state (the admin key; states the admin routes bring in)
_FINISHED_KEPT = 256  # finished (id, branch) -> fed tokens, so state.save works after `done`
_LOG_EVERY_S = 2.0


@dataclass
class _Group:
    """The branches of one request: branch 0 prefills, the others fork its state when the prompt is in."""

    submit: Submit
    sessions: list[Session]
    initial: str | None = None  # the initial state its slot started from ("": zero); None: a saved state


class Busy(RuntimeError):
    """A draining EngineCall's deadline passed while generations were still running."""


class Scheduler:
    def __init__(
        self,
        load_engine: Callable[[int], Any],
        tokenizer: Tokenizer,
        *,
        max_batch: int,
        token_chunk_size: int,
        prefix_cache: int = 0,
        max_queue: int = 64,
    ) -> None:
        self._load_engine = load_engine  # called in the engine thread with the number of slots it must have
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.token_chunk_size = token_chunk_size
        self.max_queue = max_queue
        self.cache = StateCache(list(range(max_batch, max_batch + prefix_cache)))
        self.metrics = SchedulerMetrics()
        self.engine: Any = None
        self.error: BaseException | None = None  # set when the engine thread died
        self.ready = threading.Event()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._free_slots = list(range(max_batch - 1, -1, -1))
        self._waiting: list[_Group] = []
        self._groups: dict[str, _Group] = {}
        self._running: list[Session] = []  # admission order
        self._scoring_waiting: list[Score] = []
        self._scoring: list[ChooseRun] = []  # chooses requests holding slots
        self._saved: OrderedDict[str, list[np.ndarray]] = OrderedDict()
        self._owners: dict[str, str] = {}  # saved-state handle -> the tenant that saved it
        self._finished: OrderedDict[tuple[str, int], tuple[int, tuple[int, ...]]] = OrderedDict()  # -> (ns, fed)
        self.initial_states: dict[str, int] = {"": 0}  # initial-state id -> its prefix-cache namespace
        self.default_state = ""  # where a generation that names no state starts
        self._namespaces = itertools.count(1)
        self._calls: list[EngineCall] = []
        self._stats = _StepStats()
        self._stopping = False
        self._draining = False  # set on SIGTERM: generations already in go on, new ones are refused

    # ---- thread-safe API ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def submit(self, msg: Submit | Score | Cancel | Update | SaveState) -> None:
        if isinstance(msg, Submit | Score | SaveState) and (self._stopping or not self.alive):
            msg.sink.put(Failed(msg.id, "internal", "the engine is not running", None))
            return
        if isinstance(msg, Submit) and self._draining:
            msg.sink.put(Failed(msg.id, "draining", "the server is shutting down; retry on another replica", None))
            return
        self._inbox.put(msg)

    def call(self, fn: Callable[[Scheduler], Any], *, drain: bool = False, timeout: float | None = None) -> Future:
        """Run `fn(self)` on the engine thread between steps (see messages.EngineCall); a Future of its result."""
        future: Future = Future()
        if self._stopping or not self.alive:
            future.set_exception(RuntimeError("the engine is not running"))
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            self._inbox.put(EngineCall(fn, future, drain, deadline))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every session as cancelled (each gets its Done), then end the thread."""
        self._stopping = True
        self._inbox.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> None:
        """Refuse new generations from now on; those already submitted run to their end."""
        self._draining = True

    @property
    def busy(self) -> int:
        """Generations running or waiting for a slot (a snapshot from another thread, for the drain)."""
        return len(self._running) + sum(len(g.sessions) for g in list(self._waiting))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def free_slots(self) -> int:
        """Slots not held by a session (read from other threads: a snapshot, for tests and /health)."""
        return len(self._free_slots)

    # ---- the engine thread ----

    def _run(self) -> None:
        try:
            self.engine = self._load_engine(self.max_batch + len(self.cache._free))
        except BaseException as e:
            log.exception("engine failed to load")
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while self._handle_inbox(block=not (self._running or self._waiting or self._calls or self._scoring
                                                or self._scoring_waiting)):
                self._run_calls()
                self._admit_waiting()
                plan, owners, drawers = self._plan_step()
                if plan.rows:
                    self._run_step(plan, owners, drawers)
        except BaseException as e:
            log.exception("engine thread died")
            self.error = e
        self._finish_all("cancelled" if self.error is None else "error")
        self._fail_calls()

    def _handle_inbox(self, block: bool) -> bool:
        """Apply every waiting message; False once stop was asked."""
        try:
            msg = self._inbox.get() if block else self._inbox.get_nowait()
            while True:
                if msg is _STOP:
                    return False
                self._handle(msg)
                msg = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _handle(self, msg: Any) -> None:
        """Apply one message; a bug met while applying it fails that request only, never the engine thread."""
        try:
            self._dispatch(msg)
        except Exception as e:
            log.exception("handling %s failed", type(msg).__name__)
            if isinstance(msg, Submit | SaveState):
                group = self._groups.get(msg.id) if isinstance(msg, Submit) else None
                if group is not None and group.submit is msg:
                    if group in self._waiting:
                        self._waiting.remove(group)
                    self._end_group_on_error(group.sessions[0], f"internal error: {e}")
                else:
                    msg.sink.put(Failed(msg.id, "internal", f"internal error: {e}", None))

    def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, Submit):
            self._accept_submit(msg)
        elif isinstance(msg, Cancel):
            self._cancel(msg.id)
        elif isinstance(msg, Update):
            self._update(msg)
        elif isinstance(msg, SaveState):
            self._save_state(msg)
        elif isinstance(msg, EngineCall):
            self._calls.append(msg)
        elif isinstance(msg, Score):
            self._accept_score(msg)

    def _accept_score(self, msg: Score) -> None:
        """A chooses request waits, like a generation, for one free slot per choice."""
        self.metrics.requests.labels("chooses").inc()
        if len(msg.choices) > self.max_batch:
            return msg.sink.put(Failed(msg.id, "invalid_request", f"choices: at most max_batch ({self.max_batch})",
                                       "choices"))  # fmt: skip
        if msg.state is not None and self.saved_state(msg.state, msg.tenant) is None and \
                msg.state not in self.initial_states:  # fmt: skip
            message = f"state: '{msg.state}' is neither a loaded initial state nor a saved-state handle"
            return msg.sink.put(Failed(msg.id, "invalid_request", message, "state"))
        if len(self._waiting) + len(self._scoring_waiting) >= self.max_queue and len(msg.choices) > len(
                self._free_slots):  # fmt: skip
            return msg.sink.put(Failed(msg.id, "overloaded", "all slots and the queue are full, retry later", None))
        self._scoring_waiting.append(msg)
        self._admit_waiting()

    def _admit_scoring(self) -> None:
        """Scoring requests take their slots first: they hold them for a few steps only."""
        while self._scoring_waiting and len(self._scoring_waiting[0].choices) <= len(self._free_slots):
            msg = self._scoring_waiting.pop(0)
            saved = self.saved_state(msg.state, msg.tenant) if msg.state is not None else None
            state_id = msg.state if msg.state is not None else self.default_state
            if saved is None and state_id not in self.initial_states:  # unloaded while it waited
                msg.sink.put(Failed(msg.id, "invalid_request", f"state: '{msg.state}' is no longer loaded", "state"))
                continue
            slots = [self._free_slots.pop() for _ in msg.choices]
            start = functools.partial(self.engine.write_slot, layers_state=saved) if saved is not None else \
                functools.partial(self.engine.reset_slot, state_id=state_id)  # fmt: skip
            try:
                self._scoring.append(ChooseRun(msg, slots, start, self.engine.copy_slot))
            except Exception as e:
                log.exception("starting chooses %s failed", msg.id)
                self._free_slots.extend(slots)
                msg.sink.put(Failed(msg.id, "internal", f"internal error: {e}", None))

    def _end_scoring(self, run: ChooseRun, failure: Failed | None = None) -> None:
        """Give a scoring request's slots back and answer it (its result, or `failure`)."""
        if run in self._scoring:
            self._scoring.remove(run)
            self._free_slots.extend(reversed(run.slots))
        if failure is not None:
            run.msg.sink.put(failure)
        elif run.first is not None:
            run.msg.sink.put(run.result())

    def _accept_submit(self, sub: Submit) -> None:
        self.metrics.requests.labels("embed" if sub.embed else "generate").inc()
        if sub.id in self._groups:
            return self._reject(sub, "duplicate_id", f"id '{sub.id}' is already live", "id")
        if sub.n > self.max_batch:
            return self._reject(sub, "invalid_request", f"n: must be <= max_batch ({self.max_batch})", "n")
        if sub.state is not None and self.saved_state(sub.state, sub.tenant) is None and \
                sub.state not in self.initial_states:  # fmt: skip
            message = f"state: '{sub.state}' is neither a loaded initial state nor a saved-state handle"
            return self._reject(sub, "invalid_request", message, "state")
        self._admit_waiting()  # slots freed by the last step go to those already waiting before we judge the queue
        if len(self._waiting) >= self.max_queue and not (not self._waiting and sub.n <= len(self._free_slots)):
            return self._reject(sub, "overloaded", "all slots and the queue are full, retry later", None)
        group = _Group(sub, [Session(sub, b, self.tokenizer, sub.params) for b in range(sub.n)])
        self._groups[sub.id] = group
        self._waiting.append(group)
        self._admit_waiting()  # at once, so the queue holds only what truly waits for a slot

    def _reject(self, sub: Submit, code: str, message: str, param: str | None) -> None:
        self.metrics.rejected.labels(code).inc()
        sub.sink.put(Failed(sub.id, code, message, param))

    def _admit_waiting(self) -> None:
        """Give slots to waiting requests in arrival order; a request needs one slot per branch."""
        held = any(call.drain for call in self._calls)  # a model swap waits for the running ones to end
        if not held:
            self._admit_scoring()
        while not held and self._waiting and self._waiting[0].submit.n <= len(self._free_slots):
            group = self._waiting.pop(0)
            sub, first = group.submit, group.sessions[0]
            saved = self.saved_state(sub.state, sub.tenant) if sub.state is not None else None
            group.initial = None if saved is not None else self.initial_state_of(sub)
            if saved is None and group.initial not in self.initial_states:  # unloaded while it waited
                del self._groups[sub.id]
                self._reject(sub, "invalid_request", f"state: '{sub.state}' is no longer loaded", "state")
                continue
            slots = [self._free_slots.pop() for _ in group.sessions]
            try:
                cached = self._start_slot(group, slots[0], saved)
            except Exception as e:  # this request fails; the slots go back and the others go on
                log.exception("starting generation %s failed", sub.id)
                self._free_slots.extend(slots)
                del self._groups[sub.id]
                self._reject(sub, "internal", f"internal error: {e}", None)
                continue
            for s, slot in zip(group.sessions, slots, strict=True):
                s.grant(slot, cached)
            self._running.extend(group.sessions)
            self.metrics.admitted(sub, cached, looked_up=saved is None)
            sub.sink.put(Started(sub.id, len(sub.tokens), cached, first.params))
        self._observe_occupancy()

    def _start_slot(self, group: _Group, slot: int, saved: list[np.ndarray] | None) -> int:
        """Put the request's starting state in its first slot; the number of prompt tokens it already holds."""
        if saved is not None:
            self.engine.write_slot(slot, saved)
        elif (hit := self.cache.match(group.submit.tokens, (group.submit.tenant, self.initial_states[group.initial]))
              ) is not None:  # fmt: skip
            cached, cache_slot = hit
            self.engine.copy_slot(cache_slot, slot)
            return cached
        else:
            self.engine.reset_slot(slot, group.initial)
        return 0

    def _plan_step(self) -> tuple[StepPlan, list[Session], list[Session]]:
        """One decode token per decoding session, then prompt chunks in admission order within the budget;
        a draw for every session whose next token comes out of this step (all branches of a finished prompt)."""
        rows, owners, draws, drawers, failed = [], [], [], [], []

        def draw(s: Session, row: int) -> None:
            try:
                draws.append(s.draw(row))
                drawers.append(s)
            except GrammarError as e:  # the grammar has no way on: end this branch after planning
                failed.append((s, f"grammar: {e}"))

        for s in self._running:
            if s.status is Status.DECODE:
                rows.append(StepRow(s.slot, (s.out_tokens[-1],), Logits.LAST))
                owners.append(s)
                draw(s, len(rows) - 1)
        # decoding never starves prefill completely: a quarter of the budget is always the prompts'
        budget = max(self.token_chunk_size - len(rows), max(1, self.token_chunk_size // 4))
        for s in self._running:
            if s.status is not Status.PREFILL or s.branch != 0 or budget <= 0:
                continue
            take = min(len(s.prompt) - s.n_fed, budget)
            last = s.n_fed + take == len(s.prompt)
            logits = Logits.LAST if last and not s.submit.embed else Logits.NONE
            rows.append(StepRow(s.slot, s.prompt[s.n_fed : s.n_fed + take], logits))
            owners.append(s)
            budget -= take
            if logits is Logits.LAST:
                for b in self._groups[s.id].sessions:
                    if b.status is not Status.FINISHED:
                        draw(b, len(rows) - 1)
        # scoring (chooses) shares the prompts' budget; its logit lines (a vocabulary-wide head each, the cost
        # of a step on small GPUs) are held to max_batch per step, what a full decode step computes
        lines = sum(lines_of(r) for r in rows)
        score_lines = min(self.engine.max_logit_lines - lines, self.max_batch)
        for run in self._scoring:
            if budget <= 0 or score_lines <= 0:
                break
            for row in run.rows(budget, score_lines):
                rows.append(row)
                owners.append(run)
                budget -= len(row.tokens)
                score_lines -= lines_of(row)
        for s, message in failed:
            if s.status is Status.PREFILL:  # its prompt row is in the plan: branches wait on it, so all end
                self._end_group_on_error(s, message)
            elif s.status is not Status.FINISHED:
                s.finish("error")
                self._release(s, error=message)
        return StepPlan(tuple(rows), tuple(draws)), owners, drawers

    def _run_step(self, plan: StepPlan, owners: list[Session | ChooseRun], drawers: list[Session]) -> None:
        t0 = time.perf_counter()
        try:
            result = self.engine.step(plan)
        except Exception as e:  # fail this step's sessions, keep serving the rest
            log.exception("engine step failed (%d rows)", len(plan.rows))
            for s in owners:
                if isinstance(s, ChooseRun):
                    self._end_scoring(s, Failed(s.msg.id, "internal", f"engine step failed: {e}", None))
                else:
                    self._end_group_on_error(s, f"engine step failed: {e}")
            return
        drawn = dict(zip(drawers, result.drawn, strict=True))
        scored: dict[ChooseRun, list[np.ndarray]] = {}
        with batched_delivery():
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
                    self._end_group_on_error(s, f"internal error: {e}")
            for run, lines in scored.items():
                try:
                    if run.took(lines):
                        self._end_scoring(run)
                except Exception as e:
                    log.exception("chooses %s failed", run.msg.id)
                    self._end_scoring(run, Failed(run.msg.id, "internal", f"internal error: {e}", None))
        dt = time.perf_counter() - t0
        self.metrics.step_seconds.observe(dt)
        self.metrics.step_rows.observe(len(plan.rows))
        self.metrics.step_tokens.observe(plan.n_tokens)
        self._stats.record(len(plan.rows), plan.n_tokens, dt)

    def _deliver(self, s: Session, row: StepRow, drawn: dict[Session, Drawn]) -> None:
        """Row of a step's result to its session: more prompt fed, or the GPU's token taken."""
        if s.status is Status.PREFILL:
            s.n_fed += len(row.tokens)
            self.metrics.prompt_tokens.inc(len(row.tokens))
            if s.n_fed == len(s.prompt):
                self._prompt_done(s, drawn)
        else:
            self._take(s, drawn[s])

    def _prompt_done(self, first: Session, drawn: dict[Session, Drawn]) -> None:
        """The prompt is in branch 0's slot: cache its state, embed or fork the branches, give each its token."""
        group = self._groups[first.id]
        ns = self._cache_namespace(first)
        if ns is not None and (cache_slot := self.cache.insert(first.prompt, ns)) is not None:
            self.engine.copy_slot(first.slot, cache_slot)
        if first.submit.embed:
            self._embed(first)
            return
        for s in group.sessions[1:]:
            if s.slot >= 0:
                self.engine.copy_slot(first.slot, s.slot)
                s.n_fed = len(s.prompt)
        for s in group.sessions:
            if s in drawn and s.status is not Status.FINISHED:
                self._take(s, drawn[s])

    def _embed(self, s: Session) -> None:
        """Last-token pooling: the final layer's channel-mix input (ln2 output), L2-normalized."""
        state = self.engine.read_slot(s.slot)[-1].reshape(-1)
        n_embd = self.engine.info.n_embd
        vec = state[n_embd : 2 * n_embd].astype(np.float64)  # layout: att_x_prev [C], ffn_x_prev [C], ...
        vec /= max(float(np.linalg.norm(vec)), 1e-12)
        s.submit.sink.put(Embedded(s.id, tuple(vec.tolist()), len(s.prompt)))
        s.finish_reason, s.status = "stop", Status.FINISHED
        self._release(s, send_done=False)

    def _take(self, s: Session, drawn: Drawn) -> None:
        delta = s.take(drawn)
        self.metrics.token(s)
        if delta is not None:
            s.submit.sink.put(delta)
        if s.status is Status.FINISHED:
            self._release(s)

    def _release(self, s: Session, send_done: bool = True, error: str | None = None) -> None:
        """Free the session's slot now (keeping its final state in the prefix cache) and send its Done."""
        if s.slot >= 0:
            ns = self._cache_namespace(s)
            if ns is not None and s.out_tokens and s.finish_reason != "error":
                fed = s.fed_tokens
                if (cache_slot := self.cache.insert(fed, ns)) is not None:
                    self.engine.copy_slot(s.slot, cache_slot)
                self._finished[(s.id, s.branch)] = (ns, fed)
                while len(self._finished) > _FINISHED_KEPT:
                    self._finished.popitem(last=False)
            self._free_slots.append(s.slot)
            s.slot = -1
        if s in self._running:
            self._running.remove(s)
        if send_done:
            s.submit.sink.put(s.done(error))
        self.metrics.ended(s)
        group = self._groups.get(s.id)
        if group is not None and all(b.status is Status.FINISHED for b in group.sessions):
            del self._groups[s.id]
        self._observe_occupancy()

    def _observe_occupancy(self) -> None:
        waiting = sum(len(g.sessions) for g in self._waiting)
        self.metrics.occupancy(len(self._running), waiting, self.max_batch - len(self._free_slots), self.max_batch)

    def _cancel(self, id: str) -> None:
        self._scoring_waiting = [m for m in self._scoring_waiting if m.id != id]
        for run in [r for r in self._scoring if r.msg.id == id]:
            self._end_scoring(run, Failed(id, "cancelled", "cancelled", None))
        group = self._groups.get(id)
        if group is None:
            return
        if group in self._waiting:
            self._waiting.remove(group)
        for s in group.sessions:
            if s.status is not Status.FINISHED:
                s.finish("cancelled")
                self._release(s)

    def _end_group_on_error(self, s: Session, message: str) -> None:
        group = self._groups.get(s.id)
        for b in group.sessions if group else [s]:
            if b.status is not Status.FINISHED:
                b.finish("error")
                self._release(b, error=message)

    def _finish_all(self, reason: str) -> None:
        for group in list(self._groups.values()):
            for s in group.sessions:
                if s.status is not Status.FINISHED:
                    s.finish(reason)
                    self._release(s)
        self._waiting.clear()
        for run in list(self._scoring):
            self._end_scoring(run, Failed(run.msg.id, "internal", "the engine stopped", None))
        for msg in self._scoring_waiting:
            msg.sink.put(Failed(msg.id, "internal", "the engine stopped", None))
        self._scoring_waiting.clear()

    def _update(self, msg: Update) -> None:
        group = self._groups.get(msg.id)
        if group is None:
            return
        changes = dict(msg.changes)
        for s in group.sessions:
            s.update(changes)
        first = group.sessions[0]
        first.submit.sink.put(Updated(msg.id, first.params, len(first.out_tokens)))

    def _save_state(self, msg: SaveState) -> None:
        """Snapshot a live branch's slot, or a finished branch's state still held by the prefix cache."""
        group = self._groups.get(msg.id)
        state = None
        mine = lambda tenant: msg.tenant in (SHARED, tenant)  # noqa: E731 -- another key's generation: unknown
        if group is not None and msg.branch < len(group.sessions) and mine(group.submit.tenant):
            s = group.sessions[msg.branch]
            if s.slot >= 0 and s.status is not Status.WAITING:
                state = self.engine.read_slot(s.slot)
        elif (finished := self._finished.get((msg.id, msg.branch))) is not None and mine(finished[0][0]):
            slot = self.cache.get(finished[1], finished[0])
            if slot is not None:
                state = self.engine.read_slot(slot)
        if state is None:
            msg.sink.put(
                Failed(msg.id, "unknown_id", f"no state to save for '{msg.id}' branch {msg.branch}", "id")
            )
            return
        handle = self.store_state(state, msg.tenant)
        msg.sink.put(StateSaved(msg.id, handle, sum(a.nbytes for a in state)))

    def initial_state_of(self, sub: Submit) -> str:
        """The initial state a submit starts from when it names no saved state (embeddings: always zero)."""
        return sub.state if sub.state is not None else "" if sub.embed else self.default_state

    def _cache_namespace(self, s: Session) -> tuple[str, int] | None:
        """The prefix-cache namespace of a session: its API key's tenant and its initial state (so no key learns
        from `cached_tokens` what another sent); None when its state cannot be cached."""
        group = self._groups.get(s.id)
        if group is None or group.initial is None or (ns := self.initial_states.get(group.initial)) is None:
            return None
        return s.submit.tenant, ns

    # ---- admin work: only through `call`, on the engine thread ----

    def _run_calls(self) -> None:
        """Run waiting calls in order; a draining one waits (holding back those after it) until nothing runs."""
        while self._calls:
            call = self._calls[0]
            if call.drain and (self._running or self._scoring):
                if call.deadline is None or time.monotonic() < call.deadline:
                    return
                self._calls.pop(0)
                if call.future.set_running_or_notify_cancel():
                    call.future.set_exception(Busy(f"{len(self._running)} generation(s) still running"))
                continue
            self._calls.pop(0)
            if call.future.set_running_or_notify_cancel():
                try:
                    call.future.set_result(call.fn(self))
                except Exception as e:  # the caller gets it; the engine goes on
                    call.future.set_exception(e)

    def _fail_calls(self) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(msg, EngineCall):
                self._calls.append(msg)
        for call in self._calls:
            if call.future.set_running_or_notify_cancel():
                call.future.set_exception(RuntimeError("the engine stopped"))
        self._calls.clear()

    def store_state(self, layers: list[np.ndarray], tenant: str = SHARED) -> str:
        """Keep a copy of a state in host memory under a new handle (the oldest go beyond _SAVED_STATES); only
        `tenant` sees it (SHARED: every tenant, for states the admin routes bring in)."""
        handle = f"state-{uuid.uuid4().hex[:16]}"
        self._saved[handle] = [np.array(a, np.float32, copy=True) for a in layers]
        self._owners[handle] = tenant
        while len(self._saved) > _SAVED_STATES:
            self._owners.pop(self._saved.popitem(last=False)[0], None)
        return handle

    def _visible(self, handle: str, tenant: str) -> bool:
        return handle in self._saved and (tenant == SHARED or self._owners.get(handle) in (tenant, SHARED))

    def saved_state(self, handle: str, tenant: str = SHARED) -> list[np.ndarray] | None:
        return self._saved.get(handle) if self._visible(handle, tenant) else None

    def saved_handles(self, tenant: str = SHARED) -> dict[str, int]:
        """handle -> bytes, oldest first, of the states `tenant` sees."""
        return {h: sum(a.nbytes for a in layers) for h, layers in self._saved.items() if self._visible(h, tenant)}

    def drop_state(self, handle: str, tenant: str = SHARED) -> bool:
        if not self._visible(handle, tenant):
            return False
        self._owners.pop(handle, None)
        return self._saved.pop(handle, None) is not None

    def add_initial_state(self, state_id: str, layers: list[np.ndarray], default: bool = False) -> None:
        self.engine.add_initial_state(state_id, layers)
        self.initial_states[state_id] = next(self._namespaces)  # a fresh namespace: a reloaded id starts clean
        if default:
            self.default_state = state_id

    def remove_initial_state(self, state_id: str) -> None:
        self.engine.remove_initial_state(state_id)
        del self.initial_states[state_id]
        if self.default_state == state_id:
            self.default_state = ""

    def write_weights(self, tensors: dict[str, np.ndarray]) -> list[str]:
        """Rewrite weights in place (LoRA switch): running sessions go on with them from their next token."""
        names = self.engine.write_weights(tensors)
        self.cache.clear()  # states cached under the old weights would not match a fresh run any more
        return names

    def replace_engine(self, load: Callable[[int], Any]) -> None:
        """Swap the model (nothing may run): free the old engine first, as two large models may not fit at
        once; if the new one fails to load, load the old one again and raise. Either way the engine is new, so
        the prefix cache and the initial states are gone; saved states go with the old model."""
        n_slots, reload = self.engine.max_batch, self._load_engine
        self.engine = None
        gc.collect()  # release the old model's GPU buffers now
        self.cache.clear()
        self._finished.clear()
        self.initial_states, self.default_state = {"": 0}, ""
        try:
            self.engine = load(n_slots)
        except Exception:
            log.exception("the new model failed to load; loading the previous one again")
            self.engine = reload(n_slots)
            raise
        self._saved.clear()


class _StepStats:
    """Logs a line every few seconds while busy, so batching is visible: rows per step, tokens, speed."""

    def __init__(self) -> None:
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since, self.steps, self.rows, self.max_rows, self.tokens, self.busy_s = now, 0, 0, 0, 0, 0.0

    def record(self, rows: int, tokens: int, dt: float) -> None:
        self.steps += 1
        self.rows += rows
        self.max_rows = max(self.max_rows, rows)
        self.tokens += tokens
        self.busy_s += dt
        log.debug("step: %d rows, %d tokens, %.1f ms", rows, tokens, dt * 1e3)
        now = time.monotonic()
        if now - self.since >= _LOG_EVERY_S:
            log.info(
                "engine: %d steps, batch rows mean %.1f max %d, %d tokens, %.1f steps/s busy",
                self.steps,
                self.rows / self.steps,
                self.max_rows,
                self.tokens,
                self.steps / max(self.busy_s, 1e-9),
            )
            self._reset(now)
