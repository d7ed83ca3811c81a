"""Shader modules without the runtime checks wgpu adds to generated code, where wgpu-native allows it (opt-in).

By default naga rewrites every shader for safety against untrusted code: each dynamic index into an array
(workgroup tiles, per-invocation register arrays) is clamped to the array's length, and each loop gets a
hidden iteration counter with an exit test ("loop bounding", so a driver may not assume a loop ends). Ours
are our own shaders, tested against the reference with every index they use; in the GEMM's inner loop and
the recurrences' time loops these checks are extra instructions on every iteration, and a counted loop a
driver may no longer unroll. wgpu-native's `wgpuDeviceCreateShaderModuleTrusted` takes the checks to keep;
wgpu-py 0.32 does not wrap it, so this calls it through wgpu-py's own cffi handle.

`AI00_SHADER_CHECKS=0` builds the shaders without any check (storage-buffer reads stay bounded where the
driver does it: Vulkan's robust buffer access, which wgpu enables when the adapter has it). It stays opt-in
until a GPU times it (lavapipe's timings of it moved 2x between runs: bench/NOTES.md 23).
"""

from __future__ import annotations

import wgpu

from backend.gpu.knobs import env_count

try:  # wgpu-py's private cffi layer; any other wgpu-py falls back to the checked modules
    from wgpu.backends.wgpu_native import _api
    from wgpu.backends.wgpu_native._ffi import ffi, lib

    _TRUSTED = getattr(lib, "wgpuDeviceCreateShaderModuleTrusted", None)
except ImportError:  # pragma: no cover - another backend
    _TRUSTED = None


def shader_checks() -> bool:
    """Whether shaders keep wgpu's runtime checks (unless AI00_SHADER_CHECKS=0 where they can be dropped)."""
    return env_count("AI00_SHADER_CHECKS", 1, "0 or 1", 0, 1) == 1 or _TRUSTED is None


def create_module(device: wgpu.GPUDevice, source: str, label: str = "") -> wgpu.GPUShaderModule:
    """A WGSL module of our own: without runtime checks unless `shader_checks()`."""
    if shader_checks() or not isinstance(device, _api.GPUDevice):
        return device.create_shader_module(code=source, label=label)
    wgsl = _api.new_struct_p("WGPUShaderSourceWGSL *", code=_api.to_c_string_view(source))
    wgsl[0].chain.next = ffi.NULL
    wgsl[0].chain.sType = lib.WGPUSType_ShaderSourceWGSL
    descriptor = _api.new_struct_p(
        "WGPUShaderModuleDescriptor *",
        nextInChain=ffi.cast("WGPUChainedStruct *", wgsl),
        label=_api.to_c_string_view(label),
    )
    handle = _api.libf.wgpuDeviceCreateShaderModuleTrusted(
        device._internal, descriptor, lib.WGPUShaderRuntimeChecks_None
    )
    if handle == ffi.NULL:
        raise RuntimeError(f"shader {label or '?'}: module creation failed")
    return _api.GPUShaderModule(label, handle, device)
