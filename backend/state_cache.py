"""State cache: token prefix -> the recurrent state after it, so a prompt that starts with a known prefix feeds
only the rest.

An RWKV state is a few MB whatever the context length, so thousands fit in host memory. Two tiers, each LRU:
hot states in spare GPU slots (a GPU copy to save or restore), and host copies under a byte budget (a readback
when a hot state is pushed out, an upload on a hit). A radix tree per namespace (API key, initial state) finds
the longest cached prefix in time linear in the prompt, whatever the number of entries. Knows slot ids, not
GPUs: it moves states through the engine's slot operations (`SlotIO`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SHARED_TENANT = "*"  # the tenant every key's prefixes are filed under when the cache is configured as shared


class SlotIO(Protocol):
    """The engine's slot operations the cache needs (backend/engine_protocol.StepEngine has them)."""

    def copy_slot(self, src: int, dst: int) -> None: ...

    def read_slot(self, slot: int) -> list[np.ndarray]: ...

    def write_slot(self, slot: int, layers_state: list[np.ndarray]) -> None: ...


@dataclass(eq=False)
class _Node:
    """A radix-tree node: `edge` is the run of tokens from its parent to it."""

    edge: tuple[int, ...]
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)  # first token of the child's edge -> child
    entry: Entry | None = None


@dataclass(eq=False)
class Entry:
    """A cached state: the state after the `depth` tokens on the path to `node`, in one tier."""

    node: _Node
    depth: int
    slot: int = -1  # GPU tier: the cache slot holding it
    layers: list[np.ndarray] | None = None  # host tier: per-layer f32 copies

    @property
    def tier(self) -> str:
        return "gpu" if self.slot >= 0 else "host"


def auto_host_bytes(fraction: float = 0.125) -> int:
    """The host tier's default budget: a fraction of the memory available at start (1 GiB where unknown)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * fraction)
    except (ValueError, OSError, AttributeError):
        return 1 << 30


class StateCache:
    def __init__(self, slots: list[int], host_bytes: int = 0, *, state_bytes: int = 0, min_tokens: int = 2,
                 shared: bool = False) -> None:  # fmt: skip
        self._free = list(slots)
        self.gpu_slots = len(slots)
        self.host_budget = host_bytes
        self.state_bytes = state_bytes  # one state's size, for the GPU tier's byte gauge (the engine sets it)
        self.min_tokens = min_tokens  # shorter prefixes save too little to be worth a state
        self.shared = shared  # one namespace for every API key (a deployment whose clients trust each other)
        self._roots: dict[Hashable, _Node] = {}
        self._gpu: OrderedDict[Entry, None] = OrderedDict()  # least recently used first
        self._host: OrderedDict[Entry, None] = OrderedDict()
        self.host_bytes = 0

    def __len__(self) -> int:
        return len(self._gpu) + len(self._host)

    @property
    def enabled(self) -> bool:
        return bool(self.gpu_slots or self.host_budget)

    def tier_bytes(self) -> dict[str, int]:
        return {"gpu": len(self._gpu) * self.state_bytes, "host": self.host_bytes}

    def tier_entries(self) -> dict[str, int]:
        return {"gpu": len(self._gpu), "host": len(self._host)}

    # ---- lookup ----

    def lookup(self, tokens: tuple[int, ...], ns: Hashable) -> Entry | None:
        """The entry of the longest cached proper prefix of `tokens` (>= 1 token is left to feed, since the
        last prompt token's logits are not kept: that token is fed again)."""
        root = self._roots.get(self._key(ns))
        best, node, depth = None, root, 0
        while node is not None and depth < len(tokens) - 1:
            child = node.children.get(tokens[depth])
            if child is None or tokens[depth : depth + len(child.edge)] != child.edge:
                break
            depth += len(child.edge)
            if depth >= len(tokens):
                break
            node = child
            if node.entry is not None:
                best = node.entry
        if best is not None:
            self._touch(best)
        return best

    def restore(self, entry: Entry, io: SlotIO, slot: int) -> None:
        """Put `entry`'s state into the generation slot `slot`."""
        if entry.slot >= 0:
            io.copy_slot(entry.slot, slot)
        else:
            assert entry.layers is not None
            io.write_slot(slot, entry.layers)

    def read(self, tokens: tuple[int, ...], ns: Hashable, io: SlotIO) -> list[np.ndarray] | None:
        """The state after exactly `tokens`, if cached (a finished generation's, for `state.save`)."""
        node = self._find(tokens, ns)
        if node is None or node.entry is None:
            return None
        entry = node.entry
        self._touch(entry)
        return io.read_slot(entry.slot) if entry.slot >= 0 else entry.layers

    # ---- saving ----

    def checkpoint(self, tokens: tuple[int, ...], ns: Hashable, io: SlotIO, slot: int) -> bool:
        """Keep the state now in `slot` (the state after `tokens`): in a GPU cache slot when there are any (the
        least recently used hot state moves to the host tier), else as a host copy. False: not kept."""
        if len(tokens) < self.min_tokens or not self.enabled:
            return False
        node = self._find(tokens, ns)
        if node is not None and node.entry is not None:  # the same tokens give the same state
            self._touch(node.entry)
            return True
        if not self.gpu_slots:
            return self._keep_on_host(tokens, ns, io.read_slot(slot))
        cache_slot = self._free.pop() if self._free else self._demote_oldest(io)
        io.copy_slot(slot, cache_slot)
        entry = self._attach(tokens, ns)
        entry.slot = cache_slot
        self._gpu[entry] = None
        return True

    def _demote_oldest(self, io: SlotIO) -> int:
        """Free the least recently used GPU entry's slot, moving its state to the host tier (or dropping it
        when the host tier has no room)."""
        entry, _ = self._gpu.popitem(last=False)
        slot, entry.slot = entry.slot, -1
        if self.host_budget:
            entry.layers = io.read_slot(slot)
            self._host[entry] = None
            self.host_bytes += _nbytes(entry.layers)
            self._evict_host()
        else:
            self._detach(entry)
        return slot

    def _keep_on_host(self, tokens: tuple[int, ...], ns: Hashable, layers: list[np.ndarray]) -> bool:
        if _nbytes(layers) > self.host_budget:
            return False
        entry = self._attach(tokens, ns)
        entry.layers = layers
        self._host[entry] = None
        self.host_bytes += _nbytes(layers)
        self._evict_host()
        return True

    def _evict_host(self) -> None:
        while self.host_bytes > self.host_budget and self._host:
            entry, _ = self._host.popitem(last=False)
            assert entry.layers is not None
            self.host_bytes -= _nbytes(entry.layers)
            self._detach(entry)

    def clear(self) -> None:
        """Forget every state (the weights changed, so the cached states are stale); the GPU slots stay."""
        self._free.extend(e.slot for e in self._gpu)
        self._gpu.clear()
        self._host.clear()
        self._roots.clear()
        self.host_bytes = 0

    def _touch(self, entry: Entry) -> None:
        (self._gpu if entry.slot >= 0 else self._host).move_to_end(entry)

    def _key(self, ns: Hashable) -> Hashable:
        """Namespaces are (tenant, initial state); a shared cache files every tenant's prefixes together."""
        if self.shared and isinstance(ns, tuple) and len(ns) == 2:
            return SHARED_TENANT, ns[1]
        return ns

    # ---- the radix tree ----

    def _find(self, tokens: tuple[int, ...], ns: Hashable) -> _Node | None:
        """The node ending exactly at `tokens`, if the tree has one."""
        node, depth = self._roots.get(self._key(ns)), 0
        while node is not None and depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None or tokens[depth : depth + len(child.edge)] != child.edge:
                return None
            node, depth = child, depth + len(child.edge)
        return node if depth == len(tokens) else None

    def _attach(self, tokens: tuple[int, ...], ns: Hashable) -> Entry:
        """A new entry at the node for `tokens`, splitting an edge where the path leaves it midway."""
        node = self._roots.setdefault(self._key(ns), _Node((), None))
        depth = 0
        while depth < len(tokens):
            child = node.children.get(tokens[depth])
            if child is None:
                leaf = _Node(tokens[depth:], node)
                node.children[tokens[depth]] = leaf
                node, depth = leaf, len(tokens)
                break
            common = _common_length(child.edge, tokens, depth)
            if common < len(child.edge):
                child = _split(child, common)
            node, depth = child, depth + common
        node.entry = Entry(node, len(tokens))
        return node.entry

    def _detach(self, entry: Entry) -> None:
        """Take `entry` out of the tree, pruning nodes that lead nowhere any more."""
        node = entry.node
        node.entry = None
        while node.parent is not None and node.entry is None and not node.children:
            del node.parent.children[node.edge[0]]
            node = node.parent
        if node.parent is not None and node.entry is None and len(node.children) == 1:
            (child,) = node.children.values()  # a node with one way on and no state: fold it into its child
            child.edge, child.parent = node.edge + child.edge, node.parent
            node.parent.children[child.edge[0]] = child


def _common_length(edge: tuple[int, ...], tokens: tuple[int, ...], at: int) -> int:
    n = min(len(edge), len(tokens) - at)
    if tokens[at : at + n] == edge[:n]:
        return n
    i = 0
    while i < n and edge[i] == tokens[at + i]:
        i += 1
    return i


def _split(node: _Node, at: int) -> _Node:
    """Cut `node`'s edge after `at` tokens: a new middle node takes the first part; returns it."""
    assert node.parent is not None
    middle = _Node(node.edge[:at], node.parent)
    node.parent.children[middle.edge[0]] = middle
    node.edge, node.parent = node.edge[at:], middle
    middle.children[node.edge[0]] = node
    return middle


def _nbytes(layers: list[np.ndarray]) -> int:
    return sum(a.nbytes for a in layers)
