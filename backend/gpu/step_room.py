"""How many tokens one step may carry: the room an engine's workspace is sized for.

Every activation buffer grows with the step's tokens (workspace.floats_per_token), and a shader binds each one
whole, so the adapter's largest storage binding bounds the room: at 1.6B the time mix's six inputs (`mix`, 6 x 2,048
floats a token) fill lavapipe's 128 MiB at 2,730 tokens, while an NVIDIA GPU binds gigabytes. Within that,
`max_prefill_chunk = "auto"` sizes an idle step's prefill by memory: as many tokens as a workspace of a quarter of
the weights' bytes holds, as the engine holds them (quantized or not: wgpu does not say how much memory the GPU has,
and the weights are what the user chose to fit there), never under AUTO_MIN_TOKENS (the fixed default before) nor
over AUTO_MAX_TOKENS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from backend.gpu.models import v6, v7
from backend.gpu.models.info import ModelInfo, Version
from backend.gpu.quant import BLOCK
from backend.gpu.wkv_chunk import chunk_scratch_floats
from backend.gpu.workspace import F32, floats_per_token

WORKSPACE_SHARE = 0.25  # "auto": the workspace's bytes, as a share of the weights'
AUTO_MIN_TOKENS = 1024  # a fixed 1,024 was the default before "auto"
AUTO_MAX_TOKENS = 8192  # the config's bound on max_prefill_chunk
AUTO_ALIGN = 256  # "auto" rounds down to whole GEMM tiles of the largest kind (matmul.py)


def scratch_widths(info: ModelInfo, t: dict[str, np.ndarray]) -> tuple[int, int]:
    """Floats per token of the LoRA scratch (ws.lora) and of the LoRA hidden layers kept in ws.rkv."""
    if info.version is Version.V7:
        return (32 if info.deep_embed else 4), v7.lora_width(t)
    if info.version is Version.V6:
        return v6.lora_width(t), v6.decay_width(t)
    return 4, 0


def widest_buffer(info: ModelInfo, tensors: dict[str, np.ndarray]) -> tuple[str, int]:
    """The workspace buffer with the most floats a token, and that count."""
    per_token = floats_per_token(info, *scratch_widths(info, tensors))
    name = max(per_token, key=per_token.__getitem__)
    return name, per_token[name]


def largest_step(info: ModelInfo, tensors: dict[str, np.ndarray], max_batch: int, max_binding_bytes: int) -> int:
    """The most tokens a step may carry with every buffer sized by them within one binding (the chunked
    recurrence's scratch too, where a step may run it)."""
    room = max_binding_bytes // (F32 * widest_buffer(info, tensors)[1])

    def scratch_fits(tokens: int) -> bool:
        return chunk_scratch_floats(info, tokens, max_batch) * F32 <= max_binding_bytes

    low, high = (room, room) if scratch_fits(room) else (0, room)
    while low < high:  # the scratch grows with the tokens: the most whose scratch fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if scratch_fits(mid) else (low, mid - 1)
    return low


def check_room(info: ModelInfo, tensors: dict[str, np.ndarray], tokens: int, max_batch: int, max_binding_bytes: int,
               field: str = "max_step_tokens") -> None:  # fmt: skip
    """A ValueError naming `field` if steps of `tokens` tokens need a buffer over the adapter's binding limit
    (wgpu would refuse the engine's bind groups with less to say)."""
    room = largest_step(info, tensors, max_batch, max_binding_bytes)
    if tokens > room:
        name, floats = widest_buffer(info, tensors)
        need = tokens * floats * F32
        if need <= max_binding_bytes:  # the chunked recurrence's scratch is what does not fit
            name, need = "wkv_chunks", chunk_scratch_floats(info, tokens, max_batch) * F32
        raise ValueError(
            f"{field}: steps of {tokens} tokens need a {name} buffer of {need:,} bytes, over the adapter's "
            f"largest binding ({max_binding_bytes:,} bytes): at most {room} tokens on it"
        )  # fmt: skip


def auto_prefill_chunk(info: ModelInfo, tensors: dict[str, np.ndarray], max_batch: int, max_binding_bytes: int,
                       weight_bytes: float) -> int:  # fmt: skip
    """`max_prefill_chunk = "auto"`: the tokens of a workspace of WORKSPACE_SHARE of `weight_bytes`, in
    AUTO_MIN_TOKENS..AUTO_MAX_TOKENS and within the binding limit, rounded down to AUTO_ALIGN."""
    per_token = sum(floats_per_token(info, *scratch_widths(info, tensors)).values()) * F32
    by_memory = int(weight_bytes * WORKSPACE_SHARE) // per_token // AUTO_ALIGN * AUTO_ALIGN
    wanted = min(max(by_memory, AUTO_MIN_TOKENS), AUTO_MAX_TOKENS)
    room = largest_step(info, tensors, max_batch, max_binding_bytes)
    return min(wanted, room // AUTO_ALIGN * AUTO_ALIGN or room)


def prefill_room(setting: int | str, info: ModelInfo, tensors: dict[str, np.ndarray], max_batch: int,
                 max_binding_bytes: int, precision: str, quant: int = 0, quant_type: str = "int8") -> int:  # fmt: skip
    """The tokens of an idle step's prefill for `[model] max_prefill_chunk`: "auto" as above (the weights' bytes
    as the engine will hold them), a number as given if the adapter binds it."""
    if setting == "auto":
        weight_bytes = gpu_weight_bytes({n: a.shape for n, a in tensors.items()}, precision, quant, quant_type)
        return auto_prefill_chunk(info, tensors, max_batch, max_binding_bytes, weight_bytes)
    check_room(info, tensors, int(setting), max_batch, max_binding_bytes, "max_prefill_chunk")
    return int(setting)


def gpu_weight_bytes(shapes: Mapping[str, Sequence[int]], precision: str, quant: int = 0,
                     quant_type: str = "int8") -> float:  # fmt: skip
    """About what weights of these shapes take on the GPU: the projections of the first `quant` layers at their
    quantized size (a byte or half of one per weight, and a float scale per BLOCK; LoRAs are not quantized),
    the rest at `precision`."""
    full = 4 if precision == "fp32" else 2
    packed = (1.0 if quant_type == "int8" else 0.5) + 4 / BLOCK
    total = 0.0
    for name, shape in shapes.items():
        parts = name.split(".")
        quantized = len(shape) == 2 and name.endswith(".weight") and parts[0] == "blocks" and int(parts[1]) < quant
        total += math.prod(shape) * (packed if quantized else full)
    return total
