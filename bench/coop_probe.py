"""What the adapter's cooperative-matrix (tensor core) support does through wgpu: which WGSL forms compile,
whether they compute the right product, and how fast a plain tiled product runs with them.

    python -m bench.coop_probe [--size 2048]

Each variant is C[M, N] = A[M, K] @ B[K, N] (row-major), one subgroup per T x T output tile, K stepped by T.
It is a probe for the Engine-speed-II work, not part of the engine: the engine asks `Gpu.features` and keeps
its subgroup kernels wherever this fails.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import wgpu

VARIANTS = {  # name: (tile, WGSL scalar, numpy dtype, needs shader-f16)
    "f32-8x8": (8, "f32", np.float32, False),
    "f16-8x8": (8, "f16", np.float16, True),
    "f16-16x16": (16, "f16", np.float16, True),
}


def source(tile: int, scalar: str) -> str:
    enable = "enable f16;\n" if scalar == "f16" else ""
    mat = f"coop_mat{tile}x{tile}"
    return f"""{enable}enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<{scalar}>;
@group(0) @binding(1) var<storage, read> b: array<{scalar}>;
@group(0) @binding(2) var<storage, read_write> c: array<{scalar}>;
@group(0) @binding(3) var<uniform> dims: vec4<u32>;  // M, N, K

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>) {{
    let m0 = wg.y * {tile}u;
    let n0 = wg.x * {tile}u;
    let n = dims.y;
    let k = dims.z;
    var acc = coopLoad<{mat}<{scalar}, C>>(&c[m0 * n + n0], n);
    for (var k0 = 0u; k0 < k; k0 += {tile}u) {{
        let at = coopLoad<{mat}<{scalar}, A>>(&a[m0 * k + k0], k);
        let bt = coopLoad<{mat}<{scalar}, B>>(&b[k0 * n + n0], n);
        acc = coopMultiplyAdd(at, bt, acc);
    }}
    coopStore(acc, &c[m0 * n + n0], n);
}}
"""


Step = tuple[wgpu.GPUComputePipeline, wgpu.GPUBindGroup, tuple[int, ...]]


def dispatch(device: wgpu.GPUDevice, pipeline: wgpu.GPUComputePipeline, group: wgpu.GPUBindGroup,
             grid: tuple[int, ...], times: int, sync: wgpu.GPUBuffer, then: Sequence[Step] = ()) -> None:  # fmt: skip
    """`times` dispatches in one pass (each followed by the `then` dispatches: a GEMM's reduce, say),
    waited for (a small readback after them)."""
    enc = device.create_command_encoder()
    cp = enc.begin_compute_pass()
    for _ in range(times):
        for p, g, size in ((pipeline, group, grid), *then):
            cp.set_pipeline(p)
            cp.set_bind_group(0, g)
            cp.dispatch_workgroups(*size)
    cp.end()
    device.queue.submit([enc.finish()])
    device.queue.read_buffer(sync)


def run_variant(device: wgpu.GPUDevice, name: str, size: int) -> str:
    tile, scalar, dtype, _ = VARIANTS[name]
    try:
        module = device.create_shader_module(code=source(tile, scalar))
        pipeline = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
    except Exception as e:  # the WGSL form or the feature is not there: say which
        return f"{name}: does not compile: {str(e).splitlines()[0][:300]}"
    results = []
    for m, n, k in ((64, 64, 64), (size, size, size)):
        rng = np.random.default_rng(0)
        a = (rng.standard_normal((m, k)) / 8).astype(dtype)
        b = (rng.standard_normal((k, n)) / 8).astype(dtype)
        usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
        bufs = [device.create_buffer_with_data(data=x.tobytes(), usage=usage) for x in (a, b, np.zeros((m, n), dtype))]
        uni = device.create_buffer_with_data(data=np.array([m, n, k, 0], np.uint32).tobytes(),
                                             usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_SRC)  # fmt: skip
        entries = [{"binding": i, "resource": {"buffer": x}} for i, x in enumerate([*bufs, uni])]
        group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
        repeat = 1 if m == 64 else 5

        grid = (n // tile, m // tile)
        if m == 64:
            dispatch(device, pipeline, group, grid, 1, uni)
            got = np.frombuffer(device.queue.read_buffer(bufs[2]), dtype).reshape(m, n).astype(np.float32)
            want = a.astype(np.float32) @ b.astype(np.float32)
            err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-9))
            results.append(f"64^3 max rel err {err:.2e}")
        else:
            dispatch(device, pipeline, group, grid, 1, uni)
            start = time.perf_counter()
            dispatch(device, pipeline, group, grid, repeat, uni)
            seconds = (time.perf_counter() - start) / repeat
            results.append(f"{m}^3 {2 * m * n * k / seconds / 1e12:.1f} TFLOP/s (one subgroup per tile, no reuse)")
    return f"{name}: " + "; ".join(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    print(f"adapter: {adapter.info.get('device', '?')} ({adapter.info.get('backend_type', '?')})")
    if "cooperative-matrix" not in adapter.features:
        print("cooperative-matrix: not offered by this adapter")
        return
    wanted = [f for f in ("cooperative-matrix", "shader-f16", "subgroup") if f in adapter.features]
    device = adapter.request_device_sync(required_features=wanted)
    for name, (_, _, _, needs_f16) in VARIANTS.items():
        if needs_f16 and "shader-f16" not in wanted:
            print(f"{name}: skipped (no shader-f16)")
            continue
        print(run_variant(device, name, args.size), flush=True)


if __name__ == "__main__":
    main()
