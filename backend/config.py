"""Settings -> frozen, validated sections. Every error names its field: `model.max_batch: must be 1..1024, got 0`.

Each field comes from, first found: a command-line flag (`--listen.port 8080`), the environment
(`AI00_LISTEN__PORT=8080`), the TOML file (`[listen] port = 8080`), the default. pydantic-settings reads all
three from the same models (`layered`); `Config.from_dict` validates a plain dict (tests) and reads nothing else.
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from backend.chat_template import ChatTemplate
from backend.resources import DEFAULT_CONFIG  # the shipped Config.toml: every field at its default
from backend.sampling.params import OPENAI_DEFAULTS, TUNABLE, declared
from backend.state_cache import auto_host_bytes

ENV_PREFIX = "AI00_"  # AI00_<SECTION>__<FIELD>, e.g. AI00_LISTEN__API_KEYS='["k1"]'


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")  # a served model's name, as requests give it
SECRETS = ("api_keys", "admin_key", "metrics_key")  # never echoed in an error


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every bad field."""


def _range(lo: float, hi: float):
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"must be {lo}..{hi}, got {v}")
        return v

    return AfterValidator(check)


def _existing_file(v: str) -> str:
    if v and not Path(v).is_file():
        raise ValueError(f"file '{v}' not found")
    return v


FilePath = Annotated[str, AfterValidator(_existing_file)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StateEntry(_Section):
    """A tuned initial state (.st with blocks.{i}.att.time_state) that requests choose by `state: name`."""

    path: FilePath
    name: str = ""  # empty: the file name without its extension
    default: bool = False  # generations that name no state start from it


class LoraEntry(_Section):
    """A LoRA adapter merged at load (W += alpha / r * B @ A); switchable later through /api/loras."""

    path: FilePath
    alpha: float = 1.0


def _index_if_digits(v: Any) -> Any:
    """"0" from a flag or an environment list is the adapter index 0, not a name containing "0"."""
    return int(v) if isinstance(v, str) and v.isdigit() else v


def _tokens_or_auto(v: Any) -> Any:
    if v == "auto":
        return v
    if isinstance(v, str) and v.isdigit():  # from a flag or the environment
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 8192:
        raise ValueError(f'must be "auto" or 1..8192, got {v!r}')
    return v


TokensOrAuto = Annotated[int | Literal["auto"], BeforeValidator(_tokens_or_auto)]

GpuChoice = Annotated[Annotated[int, _range(0, 1024)] | Annotated[str, Field(min_length=1)],
                      BeforeValidator(_index_if_digits)]


class ModelSection(_Section):
    name: str = ""  # the name requests give as `model`; empty: the file name without its extension
    path: str = ""  # empty: the embedded demo model (tiny, trained on public-domain text)
    precision: Literal["fp16", "fp32"] = "fp16"
    quant: Annotated[int, _range(0, 1024)] = 0  # number of layers to quantize
    quant_type: Literal["none", "int8", "nf4"] = "none"
    max_batch: Annotated[int, _range(1, 1024)] = 8  # concurrent sessions (state slots)
    # prompt tokens a step carries beside running streams with decode_gap_ms = 0; paced, a quarter of it at least
    token_chunk_size: Annotated[int, _range(1, 8192)] = 128
    # prompt tokens a step carries when no stream decodes, if predicted within ten decode gaps (never less than
    # token_chunk_size); each token of room costs ~(16 n_embd + n_ffn) floats of GPU workspace. "auto": as many as
    # a workspace of a quarter of the weights' bytes holds, 1,024 to 8,192, within the adapter's binding limit
    max_prefill_chunk: TokensOrAuto = "auto"
    # longest gap between two tokens of a running stream that prefill beside it may cause (the step is paced from
    # measured step times, from token_chunk_size // 4 prompt tokens to max_prefill_chunk); 0: a fixed token_chunk_size
    decode_gap_ms: Annotated[float, _range(0.0, 60000.0)] = 100.0
    prefix_cache: Annotated[int, _range(0, 1024)] = 8  # extra state slots holding recent prompt prefixes
    # GPU: "auto" (wgpu's high-performance pick), an index, or a name substring, as GET /api/adapters lists them
    adapter: GpuChoice = "auto"
    # one engine per entry (data parallel, each with its own slots and state cache); empty: one, on `adapter`
    adapters: tuple[GpuChoice, ...] = ()
    states: tuple[StateEntry, ...] = ()
    loras: tuple[LoraEntry, ...] = ()

    @field_validator("path")
    @classmethod
    def _model_file_exists(cls, v: str) -> str:
        if v and not Path(v).is_file():
            raise ValueError(f"file '{v}' not found (leave it empty for the demo model)")
        return v

    @field_validator("name")
    @classmethod
    def _name_is_a_name(cls, v: str) -> str:
        if v and not MODEL_NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 letters, digits, '_', '.', '-', ':' or '/'")
        return v

    def engine_adapters(self) -> tuple[int | str, ...]:
        """The GPU of each of this model's engines."""
        return self.adapters or (self.adapter,)


class TokenizerSection(_Section):
    path: FilePath = ""  # empty: the World vocab shipped in assets/tokenizer/


class TlsSection(_Section):
    cert: FilePath
    key: FilePath


def _real_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """An empty or blank key would let anyone in (an empty Bearer matches it): refuse it at load."""
    for i, key in enumerate(keys):
        if not key.strip() or key != key.strip():
            raise ValueError(f"key {i} is empty or has surrounding spaces (remove it, or leave api_keys = [])")
    return keys


class ListenSection(_Section):
    # loopback by default: a server reachable from the network should be given api_keys, then `ip = "0.0.0.0"`
    ip: str = "127.0.0.1"
    port: Annotated[int, _range(0, 65535)] = 65530  # 0: any free port (tests)
    tls: TlsSection | None = None
    api_keys: Annotated[tuple[str, ...], AfterValidator(_real_keys)] = ()
    cors_origins: tuple[str, ...] = ()
    # when set, state-changing admin routes (POST/DELETE under /api/models/, /api/loras, /api/states, /api/files/)
    # need `Authorization: Bearer ADMIN_KEY`; it also works as an API key. force_pass: no admin check (local use)
    admin_key: str = ""
    force_pass: bool = False
    metrics_key: str = ""  # when set, GET /metrics needs `Authorization: Bearer METRICS_KEY`; else it is open
    # on SIGTERM: new generations get 503, running ones get this long to finish, then the rest are cut
    drain_timeout: Annotated[float, _range(0.0, 3600.0)] = 30.0


class LogSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"  # json: one object per line, with the request id where there is one


class LimitsSection(_Section):
    max_body_bytes: Annotated[int, _range(1024, 1 << 30)] = 4 << 20
    max_message_bytes: Annotated[int, _range(1024, 1 << 30)] = 1 << 20  # one WebSocket frame
    max_prompt_tokens: Annotated[int, _range(1, 1 << 20)] = 16384
    max_tokens: Annotated[int, _range(1, 1 << 20)] = 4096  # the most a request may ask to generate
    max_n: Annotated[int, _range(1, 64)] = 16
    max_queue: Annotated[int, _range(0, 1 << 16)] = 64  # waiting sessions before `overloaded` / 429


def _config_field(name: str) -> Any:
    """A sampler field as the config takes it: the declared type and bounds, errors in the config's words."""
    base, *meta = typing.get_args(declared(name))
    bounds = {k: getattr(m, k) for info in meta for m in getattr(info, "metadata", ()) for k in ("ge", "le")
              if hasattr(m, k)}  # fmt: skip
    default = OPENAI_DEFAULTS[name] if name == "max_tokens" else None  # the shipped Config.toml sets it
    return Annotated[base, _range(bounds["ge"], bounds["le"])] | None, default


# Server-wide sampler defaults; a request's own values win, sampling/params.py's defaults fill the rest
SamplerSection = create_model("SamplerSection", __base__=_Section, __doc__="[sampler]: server-wide defaults",
                              **{name: _config_field(name) for name in TUNABLE})  # type: ignore[call-overload]


class BnfSection(_Section):
    enable_bytes_cache: bool = True
    start_nonterminal: str = Field("start", min_length=1)


class CacheSection(_Section):
    """[cache]: the state cache. Its hot tier is `model.prefix_cache` GPU slots; this is the rest."""

    # host-memory tier budget in bytes; "auto": an eighth of the memory available at start; 0: no host tier
    host_bytes: Annotated[int, _range(0, 1 << 50)] | Literal["auto"] = "auto"
    checkpoint_every: Annotated[int, _range(0, 1 << 20)] = 512  # keep a state every this many prompt tokens; 0: off
    shared: bool = False  # true: every API key reuses every other's cached prefixes (clients that trust each other)

    @property
    def host_budget(self) -> int:
        return auto_host_bytes() if self.host_bytes == "auto" else self.host_bytes


class ChatSection(_Section):
    """[chat]: the prompt format of chat requests and how answers are split."""

    template: FilePath = ""  # a Jinja2 chat template (backend/chat_template.py); empty: AI00's User:/Assistant:
    reasoning_format: Literal["deepseek", "none"] = "deepseek"  # deepseek: <think>...</think> -> reasoning_content

    @field_validator("template")
    @classmethod
    def _template_compiles(cls, v: str) -> str:
        ChatTemplate.load(v)  # a ChatTemplateError (a ValueError) names the file and the line
        return v


class FilesSection(_Section):
    """Folders whose files the admin routes may read (model, state, LoRA loading by path); nothing outside."""

    allowed_dirs: tuple[str, ...] = ("assets",)  # relative to the working directory

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(d) for d in self.allowed_dirs)


class Config(_Section):
    model: ModelSection = ModelSection()  # the one model, unless [[models]] lists several
    models: tuple[ModelSection, ...] = ()  # [[models]]: several models, each with its own engines; first: default
    strict_model_names: bool = False  # true: a request naming no served model is a 404 (else: the default serves)
    gpu_budget_bytes: Annotated[int, _range(0, 1 << 50)] = 0  # GPU memory all engines may hold; 0: unchecked
    tokenizer: TokenizerSection = TokenizerSection()
    listen: ListenSection = ListenSection()
    limits: LimitsSection = LimitsSection()
    sampler: SamplerSection = SamplerSection()
    bnf: BnfSection = BnfSection()
    chat: ChatSection = ChatSection()
    cache: CacheSection = CacheSection()
    files: FilesSection = FilesSection()
    log: LogSection = LogSection()

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> Config:
        names = [m.name for m in self.models if m.name]
        if dup := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"models: the name {dup!r} is given twice")
        if self.models and self.model != ModelSection():  # it would be ignored without a word
            raise ValueError("model: [model] is set beside [[models]]; move it into [[models]] (the first one "
                             "is the default)")  # fmt: skip
        return self

    def served(self) -> tuple[ModelSection, ...]:
        """The models to serve: [[models]], or the one [model] (the default's settings come first)."""
        return self.models or (self.model,)

    def for_engine(self, model: ModelSection, adapter: int | str) -> Config:
        """This config as one engine of `model` on `adapter` sees it: everything reading `config.model`
        (the engine builder, the served model's states and LoRAs) reads that model's section."""
        return self.model_copy(update={"model": model.model_copy(update={"adapter": adapter, "adapters": ()})})

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Config:
        try:
            return Config.model_validate(data)
        except ValidationError as e:
            raise ConfigError("\n".join(_describe(err) for err in e.errors())) from None

    @staticmethod
    def load(path: str | Path) -> Config:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file '{path}' not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        return Config.from_dict(data)


class ConfigLayers(BaseSettings, Config):
    """Config read from flags (passed in as init values) > environment > TOML file > defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: Any) -> tuple:  # fmt: skip
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)  # no .env file, no secrets dir


def layered(flags: dict[str, Any], path: str | Path = DEFAULT_CONFIG) -> Config:
    """The config: `flags` (nested by section) over AI00_* environment variables over the file `path`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    file_layer = type("_FileLayers", (ConfigLayers,), {"model_config": SettingsConfigDict(toml_file=path)})
    try:
        return file_layer(**flags)
    except ValidationError as e:
        raise ConfigError("\n".join(_describe(err) for err in e.errors())) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except SettingsError as e:  # an environment value that is not the JSON its field needs
        raise ConfigError(f"{e} (lists and tables are JSON: AI00_LISTEN__API_KEYS='[\"k1\"]')") from None


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] not in ("value_error", "missing") and not set(err["loc"]) & set(SECRETS):
        msg = f"{msg}, got {err.get('input')!r}"
    return f"{loc}: {msg}" if loc else msg  # a check across sections names its fields itself
