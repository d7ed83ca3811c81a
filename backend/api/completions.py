"""What the completions route adds to one generation: several prompts (texts or token ids) in one request, echo
with the prompt tokens' logprobs, and best_of.

- Prompts: one Submit per prompt, all sharing one sink, so a handler gathers them as one Generation; choice
  i * n + j is prompt i's j-th (OpenAI's order). The sampler params and the grammar are made once.
- Echo logprobs: the prompt is scored as a chooses job (backend/chooses.py) from the same starting state: its
  first token as the context, the rest as the one choice, so the line after token t-1 scores token t. The first
  token has no logprob (nothing came before it), as in OpenAI's answer.
- best_of: best_of branches forked from one prefill (the state copy every n > 1 makes), with the token logprobs
  on; the n with the highest cumulative logprob are kept, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from backend.api.edge import answer_of, given_tokens, prompt_tokens, to_submit
from backend.api.limits import check_n
from backend.api.schemas import CompletionRequest
from backend.messages import EventSink, Score, Scored, Submit, TokenLogprob

if TYPE_CHECKING:
    from backend.api.context import Server

# a prompt token as echo reports it: its logprob, or only its id for the first (no logprob: nothing came before)
PromptToken = TokenLogprob | int


async def completion_submits(server: Server, req: CompletionRequest, id: str, fields: dict[str, Any],
                             tenant: str) -> list[Submit]:  # fmt: skip
    """One Submit per prompt (`id`, then `id.1`, `id.2`, ...), sharing one sink, with `req.candidates` branches."""
    check_n(req.candidates, server.config.limits, server.scheduler.max_batch, "best_of" if req.best_of else "n")
    prompts = req.prompts()
    text = prompts[0] if isinstance(prompts[0], str) else ""
    first = await to_submit(server, id, EventSink(), fields, prompt=text, n=req.candidates, state=req.state,
                            tenant=tenant)  # fmt: skip
    subs = []
    for i, p in enumerate(prompts):
        param = "prompt" if len(prompts) == 1 else f"prompt.{i}"
        if isinstance(p, str):
            tokens = first.tokens if i == 0 else prompt_tokens(server, p, param)
        else:
            tokens = given_tokens(server, p, param)
        subs.append(replace(first, id=id if i == 0 else f"{id}.{i}", tokens=tokens))
    return subs


def echo_text(server: Server, prompt: str | Sequence[int]) -> str:
    return prompt if isinstance(prompt, str) else server.tokenizer.decode(prompt)


async def prompt_logprobs(server: Server, sub: Submit, top: int) -> list[PromptToken]:
    """Each prompt token's logprob (and its `top` alternatives) after the tokens before it."""
    first, rest = sub.tokens[0], sub.tokens[1:]
    if not rest:
        return [first]
    score = Score(f"{sub.id}-echo", (first,), (rest,), EventSink(), sub.state, tenant=sub.tenant, top=top)
    scored: Scored = await answer_of(server, score, Scored)
    return [first, *scored.tokens[0]]


def best_branches(logprobs: Sequence[Sequence[TokenLogprob]], n: int) -> list[int]:
    """The `n` branches with the highest cumulative logprob, best first (ties: the lower branch)."""
    totals = [sum(t.logprob for t in lps) for lps in logprobs]
    return sorted(range(len(totals)), key=lambda b: -totals[b])[:n]
