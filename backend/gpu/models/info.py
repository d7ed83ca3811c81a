"""What a model is (version and sizes) and how its recurrent state is laid out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Version(StrEnum):
    V4 = "v4"
    V5_0 = "v5.0"  # per-head decay, no gate
    V5_1 = "v5.1"  # per-head decay, gate
    V5_2 = "v5.2"  # per-channel decay, gate, time_faaaa
    V6 = "v6"
    V7 = "v7"

    @property
    def major(self) -> int:
        return int(self.value[1])


@dataclass(frozen=True)
class ModelInfo:
    version: Version
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ffn: int
    head_size: int  # 0 for v4, which has no heads
    deep_embed: bool = False  # v7 DeepEmbed variant (ffn.s_emb)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size if self.head_size else 0

    @property
    def layer_state_floats(self) -> int:
        """f32 count of one layer's state for one sequence (see StateLayout)."""
        return StateLayout.of(self).size


@dataclass(frozen=True)
class StateLayout:
    """Offsets (in f32) inside one layer's state of one sequence.

    Every version keeps the two token-shift vectors first: `att_x_prev` [C] and
    `ffn_x_prev` [C]. Then the recurrence:
      v4:      aa [C], bb [C], pp [C]                (pp starts at -1e30)
      v5..v7:  kv [H, N, N], in the reference's index order
               (v5/v6: [head, key, value]; v7: [head, value, key]).
    """

    att_x_prev: int
    ffn_x_prev: int
    recurrent: int
    recurrent_size: int
    size: int

    @staticmethod
    def of(info: ModelInfo) -> StateLayout:
        c = info.n_embd
        rec = 3 * c if info.version is Version.V4 else info.n_head * info.head_size**2
        return StateLayout(att_x_prev=0, ffn_x_prev=c, recurrent=2 * c, recurrent_size=rec, size=2 * c + rec)
