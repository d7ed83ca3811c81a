"""POST /api/oai[/v1]/chooses: rank continuations of an input by perplexity (the math: backend/chooses.py).

The scoring is a `Score` message: the scheduler gives it one free slot per choice and feeds its input and
choices step by step inside the same per-step token budget as prompts, so generations keep running beside it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from aiohttp import web

from backend.api.edge import answer_of, to_score
from backend.api.guard import TENANT
from backend.api.http import PREFIXES, json_response, read_json
from backend.api.schemas import ChooseData, ChooseRequest, ChooseResponse, ChooseUsage, parse
from backend.chooses import perplexities
from backend.messages import Scored

if TYPE_CHECKING:
    from backend.api.context import Server


def routes(root: Server) -> list[web.RouteDef]:
    async def chooses(request: web.Request) -> web.Response:
        req: ChooseRequest = parse(ChooseRequest, await read_json(request))
        server = root.route(req.model)
        msg = to_score(server, f"choose-{uuid.uuid4().hex}", req, request.get(TENANT, ""))
        event = await answer_of(server, msg, Scored)
        context, choices = msg.context, msg.choices
        ppl = perplexities(choices, event)
        order = sorted(range(len(choices)), key=lambda i: (ppl[i], i))
        data = [ChooseData(index=i, rank=rank, choice=req.choices[i], perplexity=float(ppl[i]))
                for rank, i in enumerate(order)]  # fmt: skip
        usage = ChooseUsage(prompt_tokens=len(context), choice_tokens=sum(len(c) for c in choices),
                            total_tokens=event.tokens_fed)  # fmt: skip
        return json_response(ChooseResponse(data=data, model=server.model_id, usage=usage))

    return [web.post(f"{p}/chooses", chooses) for p in PREFIXES]
