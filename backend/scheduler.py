"""The engine thread: drain inbox -> admin work -> admit -> plan one step -> engine.step -> deliver.

This is the only place where requests meet the engine. Every Session lives here (backend/planner.py holds the
policies); handlers only see the frozen messages of `messages.py`, and only those cross: requests, and typed
admin messages (LoRA weights, initial states, saved states, model swap) that run between two steps. A draining
one (model swap, or a LoRA switch that asks for it) holds admissions until no session runs.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Protocol

from backend.engine_protocol import StepEngine
from backend.messages import (
    AddInitialState,
    AdminMessage,
    Answered,
    Cancel,
    DropSavedState,
    Failed,
    ListSavedStates,
    ReadSavedState,
    RemoveInitialState,
    SaveState,
    Score,
    StoreState,
    Submit,
    SwapModel,
    Update,
    WriteWeights,
)
from backend.metrics import SchedulerMetrics
from backend.planner import Planner
from backend.state_cache import StateCache
from backend.state_registry import StateRegistry
from backend.tokenizer import Tokenizer

log = logging.getLogger("ai00.scheduler")

_STOP = object()
_ADMIN = (WriteWeights, SwapModel, AddInitialState, RemoveInitialState, StoreState, ReadSavedState, ListSavedStates,
          DropSavedState)  # fmt: skip


class EngineSource(Protocol):
    """Builds engines on the engine thread (backend/engine_builder.py)."""

    def load(self, n_slots: int) -> tuple[StepEngine, Any]:
        """The configured model's engine with `n_slots` slots, and what describes it (published by `started`)."""
        ...

    def build(self, model: Any, n_slots: int) -> StepEngine:
        """An engine of `model`: a SwapModel's `model` or `fallback`."""
        ...

    def close(self) -> None:
        """The engine thread ended and dropped its engine: give back what the engines were built on."""
        ...


def _drains(msg: AdminMessage) -> bool:
    """Runs only once no session holds a slot (a model swap; a LoRA switch that asks for it)."""
    return getattr(msg, "drain", False)


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Scheduler:
    def __init__(self, engines: EngineSource, tokenizer: Tokenizer, *, max_batch: int, token_chunk_size: int,
                 prefix_cache: int = 0, max_queue: int = 64, cache_host_bytes: int = 0, checkpoint_every: int = 512,
                 cache_shared: bool = False, max_prefill_chunk: int | None = 0,
                 decode_gap_ms: float = 0.0) -> None:  # fmt: skip
        self._engines = engines
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.token_chunk_size = token_chunk_size
        self.max_queue = max_queue
        self.n_slots = max_batch + prefix_cache  # the engine's: generation slots, then the state cache's hot tier
        self.cache = StateCache(list(range(max_batch, self.n_slots)), cache_host_bytes, shared=cache_shared)
        self.registry = StateRegistry()
        self.metrics = SchedulerMetrics()
        self.planner = Planner(tokenizer, max_batch=max_batch, token_chunk_size=token_chunk_size,
                               max_queue=max_queue, cache=self.cache, registry=self.registry,
                               metrics=self.metrics, checkpoint_every=checkpoint_every,
                               max_prefill_chunk=max_prefill_chunk, decode_gap_ms=decode_gap_ms)  # fmt: skip
        # the first load's outcome, handed to the event loop: what the engine source says describes the model,
        # or Failed("load_failed")
        self.started: Future = Future()
        self.error: BaseException | None = None  # set when the engine thread died
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._admin: list[AdminMessage] = []
        self._stopping = False
        self._draining = False  # set on SIGTERM: generations already in go on, new ones are refused

    # ---- thread-safe API ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def submit(self, msg: Submit | Score | Cancel | Update | SaveState | AdminMessage) -> None:
        answered = isinstance(msg, (Submit, Score, SaveState, *_ADMIN))
        if answered and (self._stopping or not self.alive):
            msg.sink.put(Failed(getattr(msg, "id", ""), "internal", "the engine is not running", None))
            return
        if isinstance(msg, Submit) and self._draining:
            msg.sink.put(Failed(msg.id, "draining", "the server is shutting down; retry on another replica", None))
            return
        self._inbox.put(msg)

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
        return self.planner.slots.busy

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def free_slots(self) -> int:
        """Slots not held by a session (read from other threads: a snapshot, for tests and /health)."""
        return len(self.planner.slots.free)

    # ---- the engine thread ----

    def _run(self) -> None:
        try:
            engine, described = self._engines.load(self.n_slots)
        except BaseException as e:
            log.exception("engine failed to load")
            self.error = e
            self.started.set_result(Failed("", "load_failed", str(e)))
            self._engines.close()
            return
        self._use(engine)
        self.started.set_result(described)
        try:
            while self._handle_inbox(block=self.planner.slots.idle and not self._admin):
                self.tick()
        except BaseException as e:
            log.exception("engine thread died")
            self.error = e
        self.planner.slots.finish_all("cancelled" if self.error is None else "error")
        self._fail_admin()
        self._use(None)
        if self.error is None:  # a thread that died may leave its device broken: the next model takes a new one
            self._engines.close()

    def _use(self, engine: StepEngine | None) -> None:
        """Serve with `engine` (None: none loaded); the cache's states belong to the engine before it."""
        self.planner.engine = engine
        self.cache.clear()
        if engine is not None:
            self.cache.state_bytes = engine.state_bytes
        self.metrics.cache_stored(self.cache)

    def tick(self) -> None:
        """Admin work that may run now, admissions, then one step (when there is anything to run)."""
        self._run_admin()
        self.planner.admit_waiting()
        plan, owners, drawers = self.planner.plan_step()
        if plan.rows:
            self.planner.run_step(plan, owners, drawers)

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
                self.planner.slots.fail(msg, f"internal error: {e}")

    def _dispatch(self, msg: Any) -> None:
        p = self.planner
        if isinstance(msg, Submit):
            p.accept_submit(msg)
        elif isinstance(msg, Cancel):
            p.slots.cancel(msg.id)
        elif isinstance(msg, Update):
            p.slots.update(msg)
        elif isinstance(msg, SaveState):
            p.slots.save_state(msg)
        elif isinstance(msg, Score):
            p.accept_score(msg)
        elif isinstance(msg, _ADMIN):
            self._admin.append(msg)
            p.held = p.held or _drains(msg)

    # ---- admin work, between two steps ----

    def _run_admin(self) -> None:
        """Run waiting admin messages in order; a draining one waits (holding back those after it) until no
        session holds a slot, or fails `model_busy` once its deadline passed."""
        while self._admin:
            msg = self._admin[0]
            if _drains(msg) and self.planner.slots.occupied():
                if msg.deadline is None or time.monotonic() < msg.deadline:
                    break
                self._admin.pop(0)
                running = len(self.planner.slots.running) + len(self.planner.slots.scoring.running)
                msg.sink.put(Failed("", "model_busy", f"{running} generation(s) still running"))
                continue
            self._admin.pop(0)
            try:
                msg.sink.put(Answered(self._apply_admin(msg)))
            except _Refused as e:
                msg.sink.put(Failed("", e.code, str(e)))
            except Exception as e:  # the caller gets it as data; the engine goes on
                log.exception("%s failed", type(msg).__name__)
                msg.sink.put(Failed("", "internal", f"{type(e).__name__}: {e}"))
        self.planner.held = any(_drains(m) for m in self._admin)

    def _apply_admin(self, msg: AdminMessage) -> Any:
        engine, registry = self.planner.engine, self.registry
        assert engine is not None
        if isinstance(msg, WriteWeights):
            names = engine.write_weights(msg.tensors)
            self.cache.clear()  # states cached under the old weights would not match a fresh run any more
            self.metrics.cache_stored(self.cache)
            return names
        if isinstance(msg, AddInitialState):
            return self._add_initial_state(msg.state_id, msg.layers, msg.default)
        if isinstance(msg, RemoveInitialState):
            engine.remove_initial_state(msg.state_id)
            return registry.remove_initial(msg.state_id)
        if isinstance(msg, StoreState):
            return registry.store(list(msg.layers), msg.tenant)
        if isinstance(msg, ReadSavedState):
            layers = registry.saved(msg.handle, msg.tenant)
            return None if layers is None else tuple(layers)
        if isinstance(msg, ListSavedStates):
            return registry.handles(msg.tenant)
        if isinstance(msg, DropSavedState):
            return registry.drop(msg.handle, msg.tenant)
        return self._swap(msg)

    def _add_initial_state(self, state_id: str, layers: tuple, default: bool) -> None:
        assert self.planner.engine is not None
        self.planner.engine.add_initial_state(state_id, list(layers))
        self.registry.add_initial(state_id, default)

    def _swap(self, msg: SwapModel) -> int:
        """Swap the model (nothing runs): free the old engine first, as two large models may not fit at once; if
        the new one fails to load, build the old one again and refuse. Either way the engine is new, so the
        prefix cache and the initial states are gone; saved states go with the old model. Answers the new
        engine's GPU bytes."""
        assert self.planner.engine is not None
        n_slots = self.planner.engine.max_batch
        self._use(None)
        gc.collect()  # release the old model's GPU buffers now
        self.registry.new_model()
        try:
            engine = self._engines.build(msg.model, n_slots)
        except Exception as e:
            log.exception("the new model failed to load; loading the previous one again")
            self._use(self._engines.build(msg.fallback, n_slots))
            for state in msg.previous:  # the old model is back: so are its states
                self._add_initial_state(*state)
            raise _Refused("load_failed", str(e)) from e
        self._use(engine)
        self.registry.clear_saved()
        for state in msg.states:
            self._add_initial_state(*state)
        return engine.gpu_bytes

    def _fail_admin(self) -> None:
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(msg, _ADMIN):
                self._admin.append(msg)
        for msg in self._admin:
            msg.sink.put(Failed("", "internal", "the engine stopped"))
        self._admin.clear()
