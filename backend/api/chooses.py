"""POST /api/oai[/v1]/chooses: rank continuations of an input by perplexity (the math: backend/chooses.py).

The scoring runs on the engine thread between two steps (Scheduler.call) in free state slots, one per choice;
running generations pause for those few steps. Too few free slots: 429, retry later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from backend.api.openai import PREFIXES, json_response, prompt_tokens, read_json
from backend.api.schemas import ApiError, ChooseRequest, parse
from backend.chooses import NEUTRAL, Scores, perplexities, score

if TYPE_CHECKING:
    from backend.app import Server
    from backend.scheduler import Scheduler


def routes(server: Server) -> list[web.RouteDef]:
    async def chooses(request: web.Request) -> web.Response:
        req: ChooseRequest = parse(ChooseRequest, await read_json(request))
        context = prompt_tokens(server, req.input_text())
        choices = [tuple(server.tokenizer.encode(c)) for c in req.choices]
        if (empty := next((i for i, c in enumerate(choices) if not c), None)) is not None:
            raise ApiError(400, f"choices.{empty}: no tokens", param=f"choices.{empty}")
        if (n := sum(len(c) for c in choices)) > server.config.limits.max_prompt_tokens:
            raise ApiError(400, f"choices: {n} tokens, more than max_prompt_tokens "
                                f"({server.config.limits.max_prompt_tokens})", param="choices",
                           code="context_length_exceeded")  # fmt: skip
        if len(choices) > server.scheduler.max_batch:
            raise ApiError(400, f"choices: at most max_batch ({server.scheduler.max_batch}) choices",
                           param="choices")  # fmt: skip

        def work(s: Scheduler) -> tuple[Scores, Scores | None]:
            slots = s.take_slots(len(choices))
            if slots is None:
                raise ApiError(429, f"{len(choices)} free slots needed, retry later", code="overloaded")
            try:
                start = starting_state(s, req.state)
                scores = score(s.engine, slots, start, context, choices)
                neutral = score(s.engine, slots, start, NEUTRAL, choices) if req.calibrate else None
            finally:
                s.return_slots(slots)
            return scores, neutral

        scores, neutral = await server.model.on_engine(work)
        ppl = perplexities(choices, scores, neutral)
        order = sorted(range(len(choices)), key=lambda i: (ppl[i], i))
        data = [{"object": "choice", "index": i, "rank": rank, "choice": req.choices[i], "perplexity": float(ppl[i])}
                for rank, i in enumerate(order)]  # fmt: skip
        fed = scores.tokens_fed + (neutral.tokens_fed if neutral else 0)
        usage = {"prompt_tokens": len(context), "choice_tokens": sum(len(c) for c in choices), "total_tokens": fed}
        return json_response({"object": "list", "data": data, "model": server.model_id, "usage": usage})

    return [web.post(f"{p}/chooses", chooses) for p in PREFIXES]


def starting_state(s: Scheduler, state: str | None) -> Any:
    """start(slot): a saved state, a loaded initial state, or the default one (as for generations)."""
    saved = s.saved_state(state) if state is not None else None
    if saved is not None:
        return lambda slot: s.engine.write_slot(slot, saved)
    state_id = state if state is not None else s.default_state
    if state_id not in s.initial_states:
        raise ApiError(400, f"state: '{state}' is neither a loaded initial state nor a saved-state handle",
                       param="state")  # fmt: skip
    return lambda slot: s.engine.reset_slot(slot, state_id)
