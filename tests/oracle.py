"""BlinkDL's `rwkv` package (ChatRWKV's model, CPU fp32) as the numeric oracle for our engine.

It runs out of process: `rwkv.model` picks v7 or v4-v6 (and DeepEmbed) from environment switches read
once at import, so each kind of model needs its own interpreter. Results are cached as .npz, keyed by
the model file's content and the tokens, under $AI00_ORACLE_CACHE (default: the temp dir).

    ref = reference(Path("m.pth"), [1, 2, 3])
    ref.logits        # [T, V] f32, forward([tok], state) one token at a time
    ref.state         # per layer, the reference's order: v4 [att_xx, aa, bb, pp, ffn_xx],
                      # v5/v6/v7 [att_x_prev, att_kv (H, N, N), ffn_x_prev]
    ref.seq_logits    # [T, V] f32, one forward(tokens, None, full_output=True) call
    ref.seq_state

Run as a script, this file is the worker: `python oracle.py REQUEST.json` (no project imports).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when what the worker computes changes: old cache entries stop matching
STD_RANGE = (0.1, 50.0)  # a sane logit spread; outside it the random init (or the model) is broken


class OracleError(AssertionError):
    """The reference failed, or produced logits no real model would (NaN, flat, exploding)."""


@dataclass(frozen=True)
class Reference:
    logits: np.ndarray  # [T, V] f32, token by token
    state: list[list[np.ndarray]]  # after the last token, per layer
    seq_logits: np.ndarray  # [T, V] f32, all tokens in one call
    seq_state: list[list[np.ndarray]]


def reference(pth: str | Path, tokens: Sequence[int]) -> Reference:
    return references([(pth, tokens)])[0]


def references(jobs: Sequence[tuple[str | Path, Sequence[int]]]) -> list[Reference]:
    """Run (or fetch from the cache) several models at once: one reference process per kind of model."""
    paths = [_cache_path(Path(pth), tokens) for pth, tokens in jobs]
    todo: dict[tuple[str, str], list[dict]] = {}
    for (pth, tokens), out in zip(jobs, paths, strict=True):
        if not out.exists():
            job = {"pth": str(Path(pth).resolve()), "tokens": [int(t) for t in tokens], "out": str(out)}
            todo.setdefault(_model_kind(Path(pth)), []).append(job)
    _run_workers([(group, {"RWKV_V7_ON": v7, "RWKV_DE_VERSION": de}) for (v7, de), group in todo.items()])
    refs = [_load(out) for out in paths]
    for (pth, _), ref in zip(jobs, refs, strict=True):
        check_sane(ref, Path(pth).name)
    return refs


def check_sane(ref: Reference, where: str) -> None:
    for label, logits in (("token-by-token", ref.logits), ("sequence", ref.seq_logits)):
        if not np.isfinite(logits).all():
            raise OracleError(f"{where}: {label} logits have NaN/inf")
        std = logits.std(axis=-1)
        if std.min() < STD_RANGE[0] or std.max() > STD_RANGE[1]:
            raise OracleError(
                f"{where}: {label} logit std spans {std.min():.3g}..{std.max():.3g}, "
                f"outside {STD_RANGE}: the init is not realistic"
            )


def _cache_dir() -> Path:
    path = Path(os.environ.get("AI00_ORACLE_CACHE") or Path(tempfile.gettempdir()) / "ai00-oracle-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_path(pth: Path, tokens: Sequence[int]) -> Path:
    h = hashlib.sha256()
    with pth.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    key = hashlib.sha256(f"{FORMAT}:{h.hexdigest()}:{list(map(int, tokens))}".encode()).hexdigest()
    return _cache_dir() / f"{pth.stem}-{key[:24]}.npz"


def _model_kind(pth: Path) -> tuple[str, str]:
    """("1" if v7, "1" if DeepEmbed): the env switches the reference process needs."""
    import torch

    names = torch.load(pth, map_location="cpu", mmap=True, weights_only=True).keys()
    v7 = any(n.endswith("att.r_k") for n in names)
    return ("1" if v7 else "0", "1" if any(n.endswith("ffn.s_emb.weight") for n in names) else "0")


def _run_workers(groups: list[tuple[list[dict], dict[str, str]]]) -> None:
    """One reference process per kind of model, all at once."""
    running = []
    for jobs, switches in groups:
        # JIT off where the package allows it (v4-v6): scripting costs more than these tiny models run.
        # One thread: torch's idle worker threads spin, costing 3x the CPU on these small matmuls.
        env = os.environ | switches | {"RWKV_CUDA_ON": "0", "RWKV_JIT_ON": "0", "OMP_NUM_THREADS": "1"}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"jobs": jobs}, f)
        cmd = [sys.executable, __file__, f.name]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        running.append((proc, Path(f.name), switches))
    failures = []
    for proc, request, switches in running:
        output, _ = proc.communicate(timeout=600)
        request.unlink()
        if proc.returncode:
            failures.append(f"reference failed ({switches}):\n{output[-4000:]}")
    if failures:
        raise OracleError("\n".join(failures))


def _load(path: Path) -> Reference:
    with np.load(path) as z:
        n_layer, per_layer = int(z["n_layer"]), int(z["per_layer"])

        def state(prefix: str) -> list[list[np.ndarray]]:
            return [[z[f"{prefix}_{i}_{j}"] for j in range(per_layer)] for i in range(n_layer)]

        return Reference(z["logits"], state("state"), z["seq_logits"], state("seq_state"))


# --- the worker (runs in the reference's process) --------------------------------------------------


def _work(request: Path) -> None:
    import torch
    from rwkv.model import RWKV

    for job in json.loads(request.read_text())["jobs"]:
        pth, tokens = job["pth"], job["tokens"]
        model = RWKV(model=pth.removesuffix(".pth"), strategy="cpu fp32")  # both RWKV classes add .pth
        state, rows = None, []
        for token in tokens:
            logits, state = model.forward([token], state)
            rows.append(logits.float().clone())
        seq_logits, seq_state = model.forward(list(tokens), None, full_output=True)
        n_layer = model.args.n_layer
        out = {
            "logits": torch.stack(rows).numpy(),
            "seq_logits": seq_logits.float().reshape(len(tokens), -1).numpy(),
            "n_layer": n_layer,
            "per_layer": len(state) // n_layer,
        }
        for prefix, s in (("state", state), ("seq_state", seq_state)):
            for k, tensor in enumerate(s):
                out[f"{prefix}_{k // out['per_layer']}_{k % out['per_layer']}"] = tensor.float().clone().numpy()
        tmp = Path(job["out"]).with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(job["out"])  # atomic: a parallel test run never reads half a file


if __name__ == "__main__":
    _work(Path(sys.argv[1]))
