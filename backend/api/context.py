"""The Server object every route shares (config, tokenizer, scheduler, the served model's catalog), built once by
app.create_app and passed down; no api module imports app.py. A request that names a model gets a view of it
(`route`): the same server, with that model's engines as its scheduler."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import web

from backend.api.schemas import ApiError
from backend.config import Config
from backend.engine_router import BoundRouter
from backend.grammar.matcher import Grammar, Vocabulary
from backend.grammar.worker import GrammarRequest, GrammarWorkers
from backend.metrics import ModelCollector
from backend.model_pool import ModelGroup, ModelPool, UnknownModel
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
    scheduler: Scheduler | BoundRouter  # this view's model's engines (a router when it has several)
    model: ServedModel  # the model file and what the admin routes layered on it; swapped at run time
    created: int = field(default_factory=lambda: int(time.time()))
    websockets: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    readiness: Readiness = field(default_factory=Readiness)  # loading -> ready (or failed) -> draining
    pool: ModelPool | None = None  # every served model (None: a server built around one scheduler, in tests)
    group: ModelGroup | None = None  # the model this view serves
    parent: Server | None = None  # the server a view was made from: it owns the grammar workers

    def route(self, name: str | None, session: str | None = None) -> Server:
        """The server as a request naming `name` (and carrying `session`, its conversation's key) sees it; an
        unknown name is the default model unless strict_model_names, then a 404 naming `model`."""
        root = self.parent or self
        if root.pool is None:
            return self
        try:
            group = root.pool.lookup(name)
        except UnknownModel as e:
            raise ApiError(404, str(e), param="model", code="model_not_found") from None
        return dataclasses.replace(root, scheduler=group.router.bind(session), model=group.model, group=group,
                                   parent=root)  # fmt: skip

    def watch_model(self, group: ModelGroup) -> None:
        """ai00:model_info and ai00:gpu_memory_bytes in each of the model's engines' registries."""
        view = self.route(group.name)
        for engine in group.engines:
            model = engine.model
            engine.scheduler.metrics.registry.register(ModelCollector(
                view.model_labels, lambda m=model: m.catalog.gpu_bytes if m.catalog else None))  # fmt: skip

    @cached_property
    def grammar_vocab(self) -> Vocabulary:
        """The vocabulary prepared for grammar masks, built on the first request that has a grammar."""
        return self.parent.grammar_vocab if self.parent else Vocabulary(self.tokenizer)

    @cached_property
    def grammar_workers(self) -> GrammarWorkers:
        return self.parent.grammar_workers if self.parent else GrammarWorkers(self.config.tokenizer.path or None)

    async def compile_grammar(self, req: GrammarRequest) -> Grammar:
        """A request's grammar, checked in a worker process and compiled off the event loop."""
        vocab = await asyncio.to_thread(lambda: self.grammar_vocab)
        return await self.grammar_workers.compile(req, vocab)

    @property
    def model_id(self) -> str:
        return self.group.name if self.group is not None else self.model.id

    def model_cards(self) -> list[dict[str, Any]]:
        """/v1/models: every served model, the default first."""
        root = self.parent or self
        if root.pool is None:
            return [self.model_card()]
        return [root.route(g.name).model_card() for g in root.pool]

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
