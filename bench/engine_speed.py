"""Engine speed on the GPU machine: our wgpu engine vs web-rwkv-py 0.2.3 and the bandwidth floor.

    python -m bench.engine_speed --model v6:1.6B --model v7:1.6B [--web-rwkv] [--out bench/results/X.json]

Builds random-init models of real shapes (fp16), then measures, token in -> token out as a user
would: batch-1 decode tok/s, aggregate decode at 8/32/64/128 streams, prefill of a 1024-token
prompt, time to first token and GPU memory. Both engines are warmed up first (web-rwkv-py's first
run builds its pipelines); web-rwkv-py's prefill is timed at chunks of 128 and 256 tokens, the
better one reported. The bandwidth floor is the non-embedding weight bytes (as fp16) divided by the
measured device-to-device copy bandwidth (read + write bytes per second). With --out, the JSON is
rewritten after every model, so a run cut off by a time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backend.gpu.device import Gpu
from backend.gpu.engine import Engine
from backend.gpu.loader import canonical_shapes
from backend.gpu.models.info import ModelInfo, Version
from backend.gpu.step_types import Draw, Logits, StepPlan, StepRow
from backend.sampling.race import draw_key
from backend.tools import demo_model

SIZES = {"tiny": (2, 128), "0.1B": (12, 768), "0.4B": (24, 1024), "1.6B": (24, 2048), "3B": (32, 2560),
         "7B": (32, 4096)}  # fmt: skip
STREAMS = (8, 32, 64, 128)
PROMPT = 1024
BIG = 1 << 22  # tensors above this many elements are filled from a tiled random block (fast)


@dataclass
class Figures:
    engine: str
    model: str
    decode_tok_s: float = 0.0
    aggregate_tok_s: dict[int, float] = field(default_factory=dict)
    prefill_tok_s: float = 0.0
    ttft_ms: float = 0.0
    gpu_mem_gib: float = 0.0


def model_info(version: Version, n_layer: int, n_embd: int) -> ModelInfo:
    """The shape of a random-init model of this size: World vocab, the usual FFN width, 64-wide heads."""
    return ModelInfo(version, n_layer, n_embd, 65536, demo_model.default_ffn(version, n_embd),
                     0 if version is Version.V4 else 64)  # fmt: skip


def build_tensors(version: Version, n_layer: int, n_embd: int, seed: int = 0) -> dict[str, np.ndarray]:
    info = model_info(version, n_layer, n_embd)
    rng = np.random.default_rng(seed)
    block = rng.standard_normal(BIG + 4099).astype(np.float16)
    out = {}
    for i, (name, shape) in enumerate(canonical_shapes(info, demo_model.default_lora(info)).items()):
        size = math.prod(shape)
        if size > BIG:
            start = (i * 4099) % 4096
            scale = 0.1 if name == "emb.weight" else shape[-1] ** -0.5
            tiled = np.resize(block[start:], size).reshape(shape)
            out[name] = tiled * np.float16(scale)
        else:
            out[name] = demo_model._initializer(name, version)(shape, rng).astype(np.float32).reshape(shape)
    return out


def weight_bytes(tensors: dict[str, np.ndarray]) -> int:
    """Bytes a decode step must read: every weight but the embedding table, in fp16."""
    return sum(2 * a.size for n, a in tensors.items() if n != "emb.weight")


def copy_bandwidth(engine: Engine, nbytes: int = 1 << 30, repeat: int = 10) -> float:
    """Device-to-device copy, bytes read + written per second: torch's CUDA copy where torch
    sees the GPU (what the anchors in shared/device.md used), else a wgpu buffer copy."""
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            b = torch.empty_like(a)
            b.copy_(a)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeat):
                b.copy_(a)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            del a, b
            torch.cuda.empty_cache()
            return 2 * nbytes * repeat / seconds
    except ImportError:
        pass
    gpu = engine.gpu
    a, b = gpu.empty(nbytes, "bw_a"), gpu.empty(nbytes, "bw_b")
    gpu.read(b, 4)
    best = math.inf
    for _ in range(3):
        enc = gpu.device.create_command_encoder()
        for _ in range(repeat):
            enc.copy_buffer_to_buffer(a, 0, b, 0, nbytes)
        start = time.perf_counter()
        gpu.queue.submit([enc.finish()])
        gpu.read(b, 4)
        best = min(best, time.perf_counter() - start)
    a.destroy()
    b.destroy()
    return 2 * nbytes * repeat / best


def draws_for(n: int, rng: np.random.Generator, fresh: bool = False) -> tuple[Draw, ...]:
    """One GPU draw per row with AI00's default sampling (temperature 1, top-p 0.5): token in, token out."""
    return tuple(Draw(i, i, draw_key(rng), temperature=1.0, top_p=0.5, fresh=fresh) for i in range(n))


def prefill(engine: Engine, prompt: list[int], rng: np.random.Generator) -> int:
    """Slot 0 reads `prompt` in chunks of the engine's step size; returns the token drawn after it."""
    engine.reset_slot(0)
    chunk = engine.max_step_tokens
    for s in range(0, len(prompt), chunk):
        last = s + chunk >= len(prompt)
        row = StepRow(0, tuple(prompt[s : s + chunk]), Logits.LAST if last else Logits.NONE)
        res = engine.step(StepPlan((row,), draws_for(1, rng, fresh=True) if last else ()))
    return res.drawn[0].token


def prefill_speed(engine: Engine, prompt: list[int], rng: np.random.Generator) -> tuple[float, int]:
    """(tok/s of slot 0 reading the prompt, after a 300-token warm-up as for web-rwkv-py; the token drawn)."""
    prefill(engine, prompt[:300], rng)
    start = time.perf_counter()
    token = prefill(engine, prompt, rng)
    return len(prompt) / (time.perf_counter() - start), token


def streams_speed(engine: Engine, n: int, steps: int, rng: np.random.Generator) -> float:
    """Aggregate tok/s of n fresh streams decoding together: `steps` steps timed after two."""
    tokens = list(range(1, n + 1))
    for slot in range(n):
        engine.reset_slot(slot)
    for rep in range(steps + 2):
        if rep == 2:
            start = time.perf_counter()
        res = engine.step(StepPlan(tuple(StepRow(s, (tokens[s],)) for s in range(n)), draws_for(n, rng, rep == 0)))
        tokens = [d.token for d in res.drawn]
    return n * steps / (time.perf_counter() - start)


def measure_ours(engine: Engine, prompt: list[int], steps: int) -> Figures:
    fig = Figures("ai00-py", "")
    rng = np.random.default_rng(0)
    fig.prefill_tok_s, token = prefill_speed(engine, prompt, rng)
    fig.ttft_ms = len(prompt) / fig.prefill_tok_s * 1e3
    for rep in range(steps + 3):
        if rep == 3:  # after a warm-up
            start = time.perf_counter()
        token = engine.step(StepPlan((StepRow(0, (token,)),), draws_for(1, rng))).drawn[0].token
    fig.decode_tok_s = steps / (time.perf_counter() - start)
    for n in STREAMS:
        if n <= engine.max_batch:
            fig.aggregate_tok_s[n] = streams_speed(engine, n, steps // 2, rng)
    fig.gpu_mem_gib = engine.gpu_bytes / 2**30
    return fig


def measure_web_rwkv(st_path: Path, prompt: list[int], steps: int, quant_type: str = "", n_layer: int = 0) -> Figures:
    import web_rwkv_py as wrp

    fig = Figures("web-rwkv-py 0.2.3", "")
    int8 = n_layer if quant_type == "int8" else 0
    nf4 = n_layer if quant_type == "nf4" else 0
    model = wrp.Model(str(st_path), quant=int8, quant_nf4=nf4)
    model.clear_state()
    model.run(prompt[:300], token_chunk_size=128)  # warm-up: builds its pipelines for both chunk sizes
    model.clear_state()
    model.run(prompt[:300], token_chunk_size=256)
    best = math.inf
    for size in (128, 256):
        model.clear_state()
        start = time.perf_counter()
        logits = model.run(prompt, token_chunk_size=size)
        token = int(np.argmax(logits))
        best = min(best, time.perf_counter() - start)
    fig.ttft_ms, fig.prefill_tok_s = best * 1e3, len(prompt) / best
    for _ in range(3):
        token = int(np.argmax(model.run([token])))
    start = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(model.run([token])))
    fig.decode_tok_s = steps / (time.perf_counter() - start)
    return fig


def run_model(spec: str, args: argparse.Namespace, gpu: Gpu) -> dict:
    version_name, size, *quant = spec.split(":")  # e.g. v6:7B or v6:7B:nf4
    quant_type = quant[0] if quant else ""
    version = Version(version_name)
    n_layer, n_embd = SIZES[size]
    t0 = time.perf_counter()
    tensors = build_tensors(version, n_layer, n_embd)
    print(f"[{spec}] built tensors in {time.perf_counter() - t0:.1f} s", flush=True)
    info = model_info(version, n_layer, n_embd)
    t0 = time.perf_counter()
    engine = Engine(info, tensors, max_batch=max(STREAMS), max_step_tokens=args.chunk, precision="fp16", gpu=gpu,
                    quant=n_layer if quant_type else 0, quant_type=quant_type or "int8")  # fmt: skip
    load_s = time.perf_counter() - t0
    prompt = [int(t) for t in np.random.default_rng(1).integers(1, 65535, PROMPT)]
    ours = measure_ours(engine, prompt, args.steps)
    ours.model = spec
    bw = copy_bandwidth(engine)
    floor = bw / weight_bytes(tensors)
    result = {"model": spec, "load_s": load_s, "ours": asdict(ours), "copy_bandwidth_gb_s": bw / 1e9,
              "floor_tok_s": floor}  # fmt: skip
    print(f"[{spec}] ours: {asdict(ours)}; floor {floor:.0f} tok/s", flush=True)
    del engine
    if args.web_rwkv and version.major in (4, 5, 6):
        path = st_file(Path(args.st_dir), f"{version_name}-{size}", tensors, info)
        theirs = measure_web_rwkv(path, prompt, args.steps, quant_type=quant_type, n_layer=n_layer)
        theirs.model = spec
        result["web_rwkv"] = asdict(theirs)
        print(f"[{spec}] web-rwkv: {asdict(theirs)}", flush=True)
    return result


def st_file(folder: Path, name: str, tensors: dict[str, np.ndarray], info: ModelInfo) -> Path:
    """The model in AI00's .st layout for web-rwkv-py, written once per VERSION:SIZE (its fp16, int8 and
    nf4 runs read the same file); other models' files are removed first (a 7B file is 14 GB of disk)."""
    from backend.tools.convert import save_st

    path = folder / f"{name}.st"
    if not path.exists():
        for old in folder.glob("*.st"):
            old.unlink()
        save_st(tensors, path, layout="ai00", dtype=np.float16, info=info)
    return path


def print_table(results: list[dict]) -> None:
    print("\n| model | engine | decode tok/s (b=1) | x web-rwkv | x floor | agg 8/32/64/128 | prefill tok/s "
          "| TTFT ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        o, w = r["ours"], r.get("web_rwkv")
        vs = f"{o['decode_tok_s'] / w['decode_tok_s']:.2f}" if w else "-"
        agg = "/".join(f"{v:.0f}" for v in o["aggregate_tok_s"].values())
        print(f"| {r['model']} | ai00-py | {o['decode_tok_s']:.1f} | {vs} | {o['decode_tok_s'] / r['floor_tok_s']:.2f} "
              f"| {agg} | {o['prefill_tok_s']:.0f} | {o['ttft_ms']:.0f} |")
        if w:
            print(f"| {r['model']} | web-rwkv-py | {w['decode_tok_s']:.1f} | 1.00 | "
                  f"{w['decode_tok_s'] / r['floor_tok_s']:.2f} | - | {w['prefill_tok_s']:.0f} | {w['ttft_ms']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="VERSION:SIZE, e.g. v6:1.6B")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=256, help="max tokens per step (prefill chunk)")
    parser.add_argument("--web-rwkv", action="store_true")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    # one device for every model: asking wgpu for a second adapter after web-rwkv has run panics
    gpu = Gpu()
    print(f"device: {gpu.summary.name} ({gpu.summary.backend}), subgroup size {gpu.subgroup_size}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as st_dir:
        args.st_dir = st_dir
        for spec in args.model or ["v6:1.6B"]:
            results.append(run_model(spec, args, gpu))
            if args.out:
                write_json(Path(args.out), results, gpu)
    print_table(results)


def write_json(path: Path, results: list[dict], gpu: Gpu) -> None:
    import wgpu

    doc = {"results": results, "device": gpu.summary.name, "matmul": os.environ.get("AI00_MATMUL", "default"),
           "gemm_tiers": os.environ.get("AI00_GEMM", "default"), "python": sys.version, "platform": platform.platform(),
           "wgpu": wgpu.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    path.write_text(json.dumps(doc, indent=2))

if __name__ == "__main__":
    main()
