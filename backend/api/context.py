"""The Server object every route shares (config, tokenizer, scheduler, the served model's catalog), built once by
app.create_app and passed down; no api module imports app.py."""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import web

from backend.config import Config
from backend.grammar.matcher import Grammar, Vocabulary
from backend.grammar.worker import GrammarRequest, GrammarWorkers
from backend.readiness import Readiness
from backend.resources import package_version
from backend.scheduler import Scheduler
from backend.served_model import ServedModel
from backend.tokenizer import Tokenizer


@dataclass
class Server:
    """What every route needs, built once by create_app and passed down (no globals)."""

    config: Config
    tokenizer: Tokenizer
    scheduler: Scheduler
    model: ServedModel  # the model file and what the admin routes layered on it; swapped at run time
    created: int = field(default_factory=lambda: int(time.time()))
    websockets: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    readiness: Readiness = field(default_factory=Readiness)  # loading -> ready (or failed) -> draining

    @cached_property
    def grammar_vocab(self) -> Vocabulary:
        """The vocabulary prepared for grammar masks, built on the first request that has a grammar."""
        return Vocabulary(self.tokenizer)

    @cached_property
    def grammar_workers(self) -> GrammarWorkers:
        return GrammarWorkers(self.config.tokenizer.path or None)

    async def compile_grammar(self, req: GrammarRequest) -> Grammar:
        """A request's grammar, checked in a worker process and compiled off the event loop."""
        vocab = await asyncio.to_thread(lambda: self.grammar_vocab)
        return await self.grammar_workers.compile(req, vocab)

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def model_path(self) -> Path:
        return self.model.spec.path

    @property
    def version(self) -> str:
        return package_version()

    @property
    def n_embd(self) -> int:
        return self.model.info.n_embd

    @property
    def sampler_defaults(self) -> dict[str, Any]:
        return self.config.sampler.model_dump(exclude_none=True)

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "ai00"}

    def model_labels(self) -> dict[str, Any] | None:
        """ai00:model_info's labels; None until the model is loaded."""
        info, spec = self.model.info, self.model.spec
        if info is None:
            return None
        return {"model_name": self.model_id, "version": str(info.version), "n_layer": info.n_layer,
                "n_embd": info.n_embd, "n_vocab": info.n_vocab, "precision": spec.precision, "quant": spec.quant,
                "quant_type": spec.quant_type, "max_batch": self.scheduler.max_batch}  # fmt: skip

    def model_summary(self) -> dict[str, Any]:
        info, path = self.model.info, self.model_path
        size = path.stat().st_size if path.is_file() else None
        spec = self.model.spec
        return {"id": self.model_id, "version": str(info.version), "size": size,
                "n_layer": info.n_layer, "n_embd": info.n_embd, "n_vocab": info.n_vocab,
                "precision": spec.precision, "quant": spec.quant, "quant_type": spec.quant_type}  # fmt: skip


SERVER = web.AppKey("server", Server)
