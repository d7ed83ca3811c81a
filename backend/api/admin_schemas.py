"""Wire types of the admin routes (models, adapters, initial states, saved states): validation and the
OpenAPI document come from these, as for the generation routes in schemas.py. Unknown fields are errors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="1-64 of A-Z a-z 0-9 _ . -")]
FilePath = Annotated[str, Field(min_length=1, max_length=4096, description="a path on the server")]
Alpha = Annotated[float, Field(ge=-1e4, le=1e4, description="LoRA scale: W += alpha / r * B @ A")]
Timeout = Annotated[float, Field(ge=0, le=3600, description="seconds to wait for running generations to end")]
Drain = Annotated[
    bool,
    Field(description="false: running generations go on with the new weights from their next token; true: they "
                      "finish with the old ones first (new ones wait)"),
]  # fmt: skip


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests ----


class LoraSpec(_Body):
    path: FilePath
    alpha: Alpha = 1.0


class StateFileSpec(_Body):
    path: FilePath
    id: Name | None = Field(None, description="default: the file name without its extension")
    default: bool = Field(False, description="start generations that name no `state` from it")


ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$",
                                 description="a served model's name, as requests give it as `model`")]
GpuChoice = Annotated[int, Field(ge=0, le=1024)] | Annotated[str, Field(min_length=1, max_length=256)]


class ModelLoadRequest(_Body):
    path: FilePath = Field(description=".st model file (official or AI00 layout)")
    name: ModelName | None = Field(None, description="a name not served yet: serve this model beside the others "
                                   "(its own engines); a served name, or none: swap that (the default) model")
    adapters: list[GpuChoice] = Field(default_factory=list, max_length=64,
                                      description="a new model's GPUs, one engine each (default: `auto`)")
    max_batch: int | None = Field(None, ge=1, le=1024, description="a new model's slots per engine "
                                  "(default: the [model] section's)")
    precision: Literal["fp16", "fp32"] | None = Field(None, description="default: the current model's")
    quant: int = Field(0, ge=0, le=1024, description="layers whose matrices are block-quantized (see quant_type)")
    quant_type: Literal["none", "int8", "nf4"] = "none"
    loras: list[LoraSpec] = Field(default_factory=list, max_length=64, description="merged at load, in order")
    states: list[StateFileSpec] = Field(default_factory=list, max_length=256)
    wait: bool = Field(True, description="false: 409 at once if generations are running")
    timeout_s: Timeout = 60.0


class ModelUnloadRequest(_Body):
    name: ModelName | None = Field(None, description="the model to stop serving (default: the default model)")


class StateLoadRequest(_Body):
    id: Name | None = Field(None, description="default: the file name without its extension")
    path: FilePath | None = Field(None, description="a tuned-state (or exported) .st file")
    handle: str | None = Field(None, description="or a saved-state handle, to keep it as a named initial state")
    default: bool = Field(False, description="start generations that name no `state` from it")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.handle is None):
            raise ValueError("give exactly one of `path` and `handle`")
        return self


class StateUnloadRequest(_Body):
    id: Name


class AdapterLoadRequest(_Body):
    path: FilePath = Field(description="LoRA .st file: *.lora_A/*.lora_B pairs, or AI00's *.lora.0/*.lora.1")
    name: Name | None = Field(None, description="default: the file name without its extension")
    alpha: Alpha = 1.0
    active: bool = Field(True, description="merge it now (after the active ones)")
    drain: Drain = False
    timeout_s: Timeout = 60.0


class AdapterRef(_Body):
    name: Name
    alpha: Alpha | None = Field(None, description="default: the adapter's current alpha")


class AdapterSwitchRequest(_Body):
    active: list[Name | AdapterRef] = Field(max_length=64, description="the adapters to merge, in order; [] for none")
    drain: Drain = False
    timeout_s: Timeout = 60.0

    def refs(self) -> list[tuple[str, float | None]]:
        return [(a, None) if isinstance(a, str) else (a.name, a.alpha) for a in self.active]


class AdapterUnloadRequest(_Body):
    name: Name
    drain: Drain = False
    timeout_s: Timeout = 60.0


class StateSaveRequest(_Body):
    id: str = Field(min_length=1, max_length=256, description="a generation's id (the `id` of its response)")
    branch: int = Field(0, ge=0, le=63)


class StateImportRequest(_Body):
    path: FilePath = Field(description="a state .st file on the server (or POST the file itself as the body)")


class DirRequest(_Body):
    path: FilePath = Field(description="a folder inside [files] allowed_dirs")


class ConfigLoadRequest(_Body):
    path: FilePath = Field(description="a Config.toml inside [files] allowed_dirs")


class ConfigSaveRequest(_Body):
    path: FilePath = Field(description="where to write it (.toml, inside [files] allowed_dirs)")
    content: str = Field(max_length=1 << 20, description="the TOML text; saved only if it is a valid config")


# ---- responses ----


class ModelDetails(BaseModel):
    id: str
    path: str
    precision: str
    version: str
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    n_vocab: int
    size: int | None


class AdapterInfo(BaseModel):
    name: str
    path: str
    alpha: float
    rank: int
    tensors: int = Field(description="model tensors it changes")
    active: bool


class InitialStateInfo(BaseModel):
    id: str
    path: str
    default: bool
    bytes: int


class GpuInUse(BaseModel):
    name: str
    backend: str
    type: str
    features: list[str]
    max_binding_bytes: int


class ModelInfoResponse(BaseModel):
    model: ModelDetails
    adapters: list[AdapterInfo] = Field(description="LoRA adapters (the GPU is `adapter`)")
    active_adapters: list[str]
    states: list[InitialStateInfo]
    default_state: str | None
    adapter: GpuInUse | None = Field(description="the GPU adapter serving the model")
    slots: dict[str, int]


class GpuAdapter(BaseModel):
    index: int = Field(description="`[model] adapter = index` picks it")
    name: str
    vendor: str
    backend: str = Field(description="Vulkan, Metal, D3D12, OpenGL")
    type: str = Field(description="DiscreteGPU, IntegratedGPU, CPU, ...")
    driver: str
    shader_f16: bool = Field(description="fp16 weights run natively (else emulated or f32)")
    subgroups: bool
    limits: dict[str, int]
    in_use: bool = Field(description="this is the adapter serving the model")


class GpuAdapterList(BaseModel):
    data: list[GpuAdapter]


class AdapterList(BaseModel):
    data: list[AdapterInfo]
    active: list[str]


class InitialStateList(BaseModel):
    data: list[InitialStateInfo]
    default: str | None


class SavedState(BaseModel):
    handle: str = Field(description="use it as `state` in a generation; GET /api/states/{handle} exports it")
    bytes: int


class SavedStateList(BaseModel):
    data: list[SavedState]


class Ok(BaseModel):
    ok: Literal[True] = True


class ModelFile(BaseModel):
    name: str = Field(description="relative to the models folder")
    path: str
    size: int
    version: str | None = Field(description="from the header; null: not a model we read")
    n_layer: int | None
    n_embd: int | None


class ModelFileList(BaseModel):
    data: list[ModelFile]


class DirEntry(BaseModel):
    name: str
    dir: bool
    size: int | None


class DirListing(BaseModel):
    path: str
    data: list[DirEntry]


class ConfigFile(BaseModel):
    path: str
    content: str | None = Field(None, description="the TOML text (load only)")
    config: dict = Field(description="the parsed config")
