"""Shader sources from shaders/*.wgsl, specialised by defines and cached as compute pipelines.

A shader is specialised with two tiny directives, so that constants (sizes, strides)
are known to the compiler and variants (f16 weights, epilogues) cost nothing at run time:
  `{{NAME}}`                     replaced by the define's value
  `#if NAME` / `#else` / `#endif`  kept or dropped by the define's truthiness (nestable)
  `#include "file.wgsl"`          another file of shaders/, specialised with the same defines
  `#unroll J N` ... `#end`        the lines between, N times, with `{{J}}` = 0 .. N-1 (drivers keep
                                  constant-indexed arrays in registers, loop-indexed ones may spill)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import wgpu

from backend.gpu.shader_module import create_module, shader_checks
from backend.resources import SHADERS

SHADER_DIR = SHADERS  # importlib.resources: backend/shaders/ in a wheel, the checkout's shaders/ in a tree
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_BINDING = re.compile(r"@group\(0\)\s*@binding\((\d+)\)\s*var<(\w+)(?:,\s*(\w+))?>")

Defines = Mapping[str, int | bool | str]


def specialise(name: str, defines: Defines, shader_dir: Path = SHADER_DIR) -> str:
    """Return shader `name` with its directives applied."""
    lines = _unroll((shader_dir / name).read_text().splitlines(), defines)
    out: list[str] = []
    keep_stack: list[bool] = []
    for line in lines:
        stripped = line.strip()
        keeping = all(keep_stack)
        if stripped.startswith("#if "):
            keep_stack.append(bool(defines.get(stripped[4:].strip(), False)))
        elif stripped == "#else":
            keep_stack[-1] = not keep_stack[-1]
        elif stripped == "#endif":
            keep_stack.pop()
        elif not keeping:
            continue
        elif stripped.startswith("#include "):
            out.append(specialise(stripped.split('"')[1], defines, shader_dir))
        else:
            out.append(_PLACEHOLDER.sub(lambda m: _render(name, m.group(1), defines), line))
    if keep_stack:
        raise ValueError(f"{name}: unclosed #if")
    return "\n".join(out)


def _unroll(lines: list[str], defines: Defines) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped.startswith("#unroll "):
            out.append(lines[i])
            i += 1
            continue
        _, var, count = stripped.split()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "#end")
        body = lines[i + 1 : end]
        n = int(defines[count]) if count in defines else int(count)
        for k in range(n):
            out.extend(line.replace("{{" + var + "}}", str(k)) for line in body)
        i = end + 1
    return out


def _render(shader: str, key: str, defines: Defines) -> str:
    if key not in defines:
        raise KeyError(f"{shader}: define {key!r} has no value")
    value = defines[key]
    return str(int(value)) if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Pipeline:
    """A compute pipeline with an explicit layout taken from the shader's own declarations
    (auto layouts drop unused bindings, which would make bind groups depend on the variant)."""

    pipeline: wgpu.GPUComputePipeline
    layout: wgpu.GPUBindGroupLayout
    bindings: frozenset[int]


def binding_layout(source: str) -> list[dict]:
    entries = []
    for match in _BINDING.finditer(source):
        binding, space, access = int(match.group(1)), match.group(2), match.group(3)
        if space == "uniform":
            kind = wgpu.BufferBindingType.uniform
        elif access == "read_write":
            kind = wgpu.BufferBindingType.storage
        else:
            kind = wgpu.BufferBindingType.read_only_storage
        entries.append({"binding": binding, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": kind}})
    return entries


@dataclass
class PipelineCache:
    """Compute pipelines keyed by (shader, defines); built once, reused by every op and engine."""

    device: wgpu.GPUDevice
    hits: int = 0
    misses: int = 0
    _cache: dict[tuple, Pipeline] = field(default_factory=dict)

    def get(self, shader: str, defines: Defines) -> Pipeline:
        key = (shader, tuple(sorted((k, str(v)) for k, v in defines.items())), shader_checks())
        pipeline = self._cache.get(key)
        if pipeline is not None:
            self.hits += 1
            return pipeline
        self.misses += 1
        source = specialise(shader, defines)
        module = create_module(self.device, source, shader)
        entries = binding_layout(source)
        layout = self.device.create_bind_group_layout(entries=entries, label=shader)
        pipeline_layout = self.device.create_pipeline_layout(bind_group_layouts=[layout], label=shader)
        compute = self.device.create_compute_pipeline(
            layout=pipeline_layout, compute={"module": module, "entry_point": "main"}, label=shader
        )
        pipeline = Pipeline(compute, layout, frozenset(e["binding"] for e in entries))
        self._cache[key] = pipeline
        return pipeline

    def defines_of(self, compute: wgpu.GPUComputePipeline) -> dict[str, str]:
        """The defines a cached pipeline was built with (what a dispatch runs, for tests and tools)."""
        for (_, defines, _), pipeline in self._cache.items():
            if pipeline.pipeline is compute:
                return dict(defines)
        raise KeyError("not a pipeline of this cache")
