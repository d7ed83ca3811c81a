"""Write a random-init model of real shape for the soak (`python -m bench.soak_model v7:1.6B OUT.st`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from backend.gpu.models.info import Version
from backend.tools.convert import save_st
from bench.engine_speed import SIZES, build_tensors, model_info


def main() -> None:
    spec, out = sys.argv[1], Path(sys.argv[2])
    version_name, size = spec.split(":")
    version, (n_layer, n_embd) = Version(version_name), SIZES[size]
    tensors = build_tensors(version, n_layer, n_embd)
    info = model_info(version, n_layer, n_embd)
    save_st(tensors, out, layout="official", dtype=np.float16, info=info)
    print(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
