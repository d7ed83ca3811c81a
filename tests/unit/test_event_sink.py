"""EventSink delivery from the engine thread, one event at a time and batched per step."""

from __future__ import annotations

import asyncio
import threading

from backend.messages import EventSink, batched_delivery


def holds_event(sink: EventSink) -> bool:
    try:
        sink.get_nowait()
    except asyncio.QueueEmpty:
        return False
    return True


def test_batched_events_arrive_together_after_the_block_in_order_per_sink():
    async def go():
        a, b = EventSink(), EventSink()
        inside_seen: list[bool] = []
        block_done = threading.Event()

        def engine_thread():
            a.put("before")  # outside a batch: delivered on its own
            with batched_delivery():
                for i in range(5):
                    a.put(("a", i))
                    b.put(("b", i))
                block_done.set()
                inside_seen.append(release.wait(5))  # hold the block open while the loop looks
            a.put("after")

        release = threading.Event()
        thread = threading.Thread(target=engine_thread)
        thread.start()
        assert await a.get() == "before"
        await asyncio.get_running_loop().run_in_executor(None, block_done.wait, 5)
        await asyncio.sleep(0.05)
        empty_inside = not holds_event(a) and not holds_event(b)
        release.set()
        got_a = [await a.get() for _ in range(6)]
        got_b = [await b.get() for _ in range(5)]
        thread.join()
        return empty_inside, got_a, got_b, inside_seen

    empty_inside, got_a, got_b, inside_seen = asyncio.run(go())
    assert empty_inside and inside_seen == [True]
    assert got_a == [("a", i) for i in range(5)] + ["after"]
    assert got_b == [("b", i) for i in range(5)]
