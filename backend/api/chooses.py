"""POST /api/oai[/v1]/chooses: rank continuations of an input by perplexity (the math: backend/chooses.py).

The scoring is a `Score` message: the scheduler gives it one free slot per choice and feeds its input and
choices step by step inside the same per-step token budget as prompts, so generations keep running beside it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from backend.api.guard import TENANT
from backend.api.http import PREFIXES, failed_error, json_response, read_json
from backend.api.limits import check_prompt_tokens
from backend.api.openai import prompt_tokens
from backend.api.schemas import ApiError, ChooseRequest, parse
from backend.chooses import perplexities
from backend.messages import Cancel, EventSink, Failed, Score, Scored

if TYPE_CHECKING:
    from backend.api.context import Server


def routes(server: Server) -> list[web.RouteDef]:
    async def chooses(request: web.Request) -> web.Response:
        req: ChooseRequest = parse(ChooseRequest, await read_json(request))
        limits = server.config.limits
        context = prompt_tokens(server, req.input_text(), "input")
        choices = [tuple(server.tokenizer.encode(c)) for c in req.choices]
        if (empty := next((i for i, c in enumerate(choices) if not c), None)) is not None:
            raise ApiError(400, f"choices.{empty}: no tokens", param=f"choices.{empty}")
        check_prompt_tokens(sum(len(c) for c in choices), limits, "choices")
        if len(choices) > server.scheduler.max_batch:
            raise ApiError(400, f"choices: at most max_batch ({server.scheduler.max_batch}) choices",
                           param="choices")  # fmt: skip
        msg = Score(f"choose-{uuid.uuid4().hex}", context, tuple(choices), EventSink(), req.state, req.calibrate,
                    request.get(TENANT, ""))  # fmt: skip
        server.scheduler.submit(msg)
        try:
            event = await msg.sink.get()
        except asyncio.CancelledError:
            server.scheduler.submit(Cancel(msg.id))
            raise
        if isinstance(event, Failed):
            raise failed_error(event)
        assert isinstance(event, Scored)
        ppl = perplexities(choices, event)
        order = sorted(range(len(choices)), key=lambda i: (ppl[i], i))
        data = [{"object": "choice", "index": i, "rank": rank, "choice": req.choices[i], "perplexity": float(ppl[i])}
                for rank, i in enumerate(order)]  # fmt: skip
        usage = {"prompt_tokens": len(context), "choice_tokens": sum(len(c) for c in choices),
                 "total_tokens": event.tokens_fed}  # fmt: skip
        return json_response({"object": "list", "data": data, "model": server.model_id, "usage": usage})

    return [web.post(f"{p}/chooses", chooses) for p in PREFIXES]
