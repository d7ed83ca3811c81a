"""The engine router's choices, against stand-in schedulers (no GPU): where a new request goes, and that what
follows for a request reaches the engine it went to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.engine_router import AFFINITY_BLOCK, Engine, EngineRouter
from backend.messages import Cancel, SaveState, StateSaved, Submit
from backend.sampling.params import SamplerParams


@dataclass
class FakeScheduler:
    max_batch: int = 4
    busy: int = 0
    got: list[Any] = field(default_factory=list)

    @property
    def free_slots(self) -> int:
        return max(self.max_batch - self.busy, 0)

    def submit(self, msg: Any) -> None:
        self.got.append(msg)
        if isinstance(msg, Submit):
            self.busy += 1


class ListSink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def put(self, event: Any) -> None:
        self.events.append(event)


def two_engines() -> tuple[EngineRouter, list[FakeScheduler]]:
    schedulers = [FakeScheduler(), FakeScheduler()]
    return EngineRouter([Engine(None, s, i) for i, s in enumerate(schedulers)]), schedulers  # type: ignore[arg-type]


def submit(router: EngineRouter, id: str, tokens: tuple[int, ...], session: str | None = None,
           state: str | None = None) -> int:  # fmt: skip
    router.submit(Submit(id, tokens, SamplerParams(), ListSink(), state=state), session)  # type: ignore[arg-type]
    engine = router.engine_of(id)
    assert engine is not None
    return engine


def test_a_burst_spreads_over_engines_that_have_not_admitted_it_yet():
    router, schedulers = two_engines()
    engines = []
    for i in range(6):
        engines.append(submit(router, f"r{i}", (i,)))
        for s in schedulers:
            s.busy = 0  # the engine threads have not taken them from their inboxes yet
    assert engines.count(0) == engines.count(1) == 3


def test_a_prompt_that_extends_a_routed_one_follows_it():
    router, schedulers = two_engines()
    first = tuple(range(3 * AFFINITY_BLOCK))
    home = submit(router, "a", first)
    schedulers[home].busy += 2  # busier than the other, with free slots left: affinity still wins
    assert submit(router, "b", (*first, 7, 8, 9)) == home
    assert submit(router, "c", (99, *first)) != home  # a different prefix is placed by load


def test_a_full_engine_gives_up_affinity_while_another_has_room():
    router, schedulers = two_engines()
    home = submit(router, "a", (1,), session="s")
    schedulers[home].busy = schedulers[home].max_batch
    assert submit(router, "b", (1,), session="s") != home
    schedulers[1 - home].busy = schedulers[1 - home].max_batch  # both full: the session's engine queues it
    assert submit(router, "c", (1,), session="s") == 1 - home  # (the session moved with its last request)


def test_cancels_and_saves_reach_the_engine_of_their_request_and_handles_bring_requests_back():
    router, schedulers = two_engines()
    home = submit(router, "a", (5,))
    router.submit(Cancel("a"))
    assert any(isinstance(m, Cancel) for m in schedulers[home].got)
    assert not any(isinstance(m, Cancel) for m in schedulers[1 - home].got)
    router.submit(Cancel("never-routed"))  # unknown: every engine hears it, the one that knows acts
    assert all(isinstance(s.got[-1], Cancel) for s in schedulers)
    sink = ListSink()
    router.submit(SaveState("a", sink))  # type: ignore[arg-type]
    saved = next(m for m in schedulers[home].got if isinstance(m, SaveState))
    saved.sink.put(StateSaved("a", "state-00ff", 64))  # as the engine thread answers
    assert sink.events == [StateSaved("a", "state-00ff", 64)]
    schedulers[home].busy += 3
    assert all(submit(router, f"h{i}", (i,), state="state-00ff") == home for i in range(3))
