"""Grammar compilation where a hostile grammar can neither crash nor freeze the server.

The BNF -> Lark conversion, llguidance's grammar build and the first mask run in worker processes (spawned,
so they share no threads with the engine) with a deadline, an address-space cap and a small stack. A grammar
that passes there is compiled once more in the server, on a thread with four times that stack: the compile
is deterministic, so what fit in 4 MiB cannot overflow 16 MiB. Over the deadline, the worker is killed; a
worker that dies (a native stack overflow, out of memory) is replaced; either way the request gets a
GrammarError naming the limit. On the 2-CPU test machine the README grammar takes ~7 ms through both compiles
(~2 ms in-process alone); a worker starts in ~1 s, and a crashed one is replaced on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from backend.grammar import GrammarError

DEADLINE_S = 5.0  # one compile, in the worker
MEMORY_BYTES = 1 << 30  # the worker's address space (its peak on the README grammar: 0.28 GiB)
WORKER_STACK = 4 << 20
SERVER_STACK = 16 << 20
_stack_lock = threading.Lock()


@dataclass(frozen=True)
class GrammarRequest:
    kind: Literal["bnf", "json_schema", "lark"]
    payload: Any  # BNF text, a JSON schema, or llguidance Lark text (tool calls: backend/tool_calls.py)
    strict: bool = True


def to_source(req: GrammarRequest) -> str:
    """llguidance's grammar form of a request (pure; GrammarError when it is not usable)."""
    import llguidance

    from backend.grammar.bnf import bnf_to_lark
    from backend.grammar.json_schema import schema_to_grammar

    if req.kind == "bnf":
        return llguidance.LLMatcher.grammar_from_lark(bnf_to_lark(req.payload))
    if req.kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(req.payload)
    return schema_to_grammar(req.payload, req.strict)


class GrammarWorkers:
    """A few warm worker processes (started on first use) and the compile that goes through them."""

    def __init__(self, tokenizer_path: str | None, size: int = 2, deadline_s: float = DEADLINE_S,
                 memory_bytes: int = MEMORY_BYTES) -> None:  # fmt: skip
        self.tokenizer_path, self.deadline_s, self.memory_bytes = tokenizer_path, deadline_s, memory_bytes
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)  # a place for a worker, started when first needed
        self._all: list[_Worker] = []

    async def compile(self, req: GrammarRequest, vocab: Any) -> Any:
        """The Grammar of `req` for `vocab`, checked in a worker first; GrammarError when refused."""
        from backend.grammar.matcher import Grammar

        source = await self.check(req)
        return await run_on_big_stack(Grammar.compile, source, vocab)

    async def check(self, req: GrammarRequest) -> str:
        worker = await self._idle.get()
        try:
            if worker is None or not worker.alive:
                worker = await asyncio.to_thread(self._start)
            reply = await asyncio.to_thread(worker.ask, req, self.deadline_s)
        except BaseException:
            if worker is not None:
                worker.stop()
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(worker if worker.alive else None)
        if reply[0] == "error":
            raise GrammarError(reply[1])
        return reply[1]

    def _start(self) -> _Worker:
        worker = _Worker(self.tokenizer_path, self.memory_bytes)
        self._all.append(worker)
        self._all = [w for w in self._all if w.alive]
        return worker

    def close(self) -> None:
        for worker in self._all:
            worker.stop()
        self._all.clear()


class _Worker:
    def __init__(self, tokenizer_path: str | None, memory_bytes: int) -> None:
        # a fresh interpreter (not fork: that would copy the engine's threads and GPU handles; not
        # multiprocessing's spawn: that re-imports the caller's __main__), talking over a socket pair
        ours, theirs = socket.socketpair()
        args = [sys.executable, "-m", "backend.grammar.worker", str(theirs.fileno()), str(memory_bytes),
                tokenizer_path or ""]  # fmt: skip
        self.process = subprocess.Popen(args, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        try:
            if not self.conn.poll(120) or self.conn.recv() != "ready":
                raise EOFError
        except (EOFError, OSError):
            self.stop()
            raise GrammarError("the grammar worker did not start") from None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def ask(self, req: GrammarRequest, deadline_s: float) -> tuple[str, str]:
        """("ok", source) or ("error", message); kills the worker when it overruns or dies."""
        try:
            self.conn.send(req)
            if not self.conn.poll(deadline_s):
                self.stop()
                return "error", f"grammar too complex: compiling it took more than {deadline_s:g} s (the limit)"
            return self.conn.recv()
        except (EOFError, OSError):
            self.stop()
            return "error", ("grammar too complex: compiling it crashed the grammar worker (too deep or too "
                             f"large; limits: 1024 rules, 256 levels, {MEMORY_BYTES >> 30} GiB)")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.wait(5)
        with contextlib.suppress(Exception):
            self.conn.close()


def serve(conn: Connection, tokenizer_path: str | None, memory_bytes: int) -> None:
    """The worker process: build the vocabulary once, then answer compile requests one at a time."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    threading.stack_size(WORKER_STACK)
    thread = threading.Thread(target=_serve_loop, args=(conn, tokenizer_path), name="grammar")
    thread.start()
    thread.join()


def _serve_loop(conn: Connection, tokenizer_path: str | None) -> None:
    from backend.grammar.matcher import Grammar, Vocabulary
    from backend.tokenizer import Tokenizer

    vocab = Vocabulary(Tokenizer.from_file(tokenizer_path))
    conn.send("ready")
    while True:
        try:
            req = conn.recv()
        except EOFError:
            return
        try:
            source = to_source(req)
            Grammar.compile(source, vocab).matcher()  # the build and the first mask, as the server will do them
            conn.send(("ok", source))
        except GrammarError as e:
            conn.send(("error", str(e)))
        except (RecursionError, MemoryError) as e:
            conn.send(("error", f"grammar too complex: {type(e).__name__}"))


async def run_on_big_stack(fn: Any, *args: Any) -> Any:
    """fn(*args) on a fresh thread with SERVER_STACK of stack, awaited without blocking the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, e)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    with _stack_lock:  # threading.stack_size is process-wide: set it only around this thread's start
        old = threading.stack_size(SERVER_STACK)
        try:
            threading.Thread(target=run, name="grammar-compile", daemon=True).start()
        finally:
            threading.stack_size(old)
    return await future


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), sys.argv[3] or None, int(sys.argv[2]))
