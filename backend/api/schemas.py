"""Wire types: REST bodies, WebSocket frames, responses and errors. Validation and the OpenAPI document both
come from these models, so they never disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from backend.chat import DEFAULT_NAMES, Message
from backend.grammar import GrammarError
from backend.grammar.json_schema import JSON_OBJECT, MAX_SCHEMA_DEPTH, nesting_depth
from backend.grammar.matcher import Grammar
from backend.grammar.worker import GrammarRequest
from backend.reasoning import ReasoningFormat
from backend.sampling.params import TUNABLE, declared, optional_fields
from backend.tool_calls import Tool, ToolCall, ToolPolicy

# ---- errors ----


class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def describe(err: ValidationError, drop_tag: bool = False) -> tuple[str, str | None]:
    """(message, param) of the first problem; `param` is the dotted field path."""
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"]]
    if drop_tag and loc:  # a tagged union puts the tag (`generate`) first
        loc = loc[1:]
    param = ".".join(loc) or None
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field"
    return (f"{param}: {msg}" if param else msg), param


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate a request body, or raise a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        message, param = describe(e)
        raise ApiError(400, message, param=param, code="invalid_value") from None


# ---- sampler fields shared by REST and WebSocket ----

MaxTokens = declared("max_tokens")


def _one_or_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


# OpenAI's `stop`: a string or a list of them (an error names `stop` either way)
OpenAIStop = Annotated[declared("stop"), BeforeValidator(_one_or_list),
                       WithJsonSchema({"anyOf": [{"type": "string"}, TypeAdapter(declared("stop")).json_schema()]})]
# the sampler fields both doors take, declared once in sampling/params.py
REQUEST_SAMPLER = (*TUNABLE, "seed", "logit_bias")  # the sampler fields a REST request takes as they are
MODEL_FIELD = "a served model (GET /v1/models); another name: the default model, unless strict_model_names"
_RequestSampler = create_model("_RequestSampler", **optional_fields(REQUEST_SAMPLER))  # type: ignore[call-overload]
_WsSampler = create_model("_WsSampler", **optional_fields((*TUNABLE, "stop", "seed", "logprobs", "logit_bias")))  # type: ignore[call-overload]
Names = Annotated[
    dict[Literal["user", "assistant", "system", "tool"], Annotated[str, Field(min_length=1, max_length=64)]],
    Field(description=f"role -> display name in the RWKV prompt; defaults {DEFAULT_NAMES}"),
]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionCallIn(BaseModel):
    name: ToolName
    arguments: str = Field(max_length=65536, description="JSON text, as OpenAI sends it")


class ToolCallIn(BaseModel):
    """A call in an assistant message of the history (rendered back into the prompt)."""

    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64, description="speaker name shown instead of the role's")
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=64)] | None = Field(
        None, description="assistant: the calls it made, written back into the prompt in the tool-call format"
    )
    tool_call_id: str | None = Field(None, max_length=128, description="tool: the call this message answers")

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def as_message(self) -> Message:
        """The message as backend/chat.py renders it."""
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ())
        return Message(self.role, self.text, self.name, calls, self.tool_call_id)


class FunctionDef(BaseModel):
    name: ToolName
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments; the call's "
                                              "arguments follow it (none: any JSON object)")  # fmt: skip
    strict: bool | None = Field(None, description="true: a schema keyword the grammar cannot enforce is an error")

    def as_tool(self) -> Tool:
        return Tool(self.name, self.description, self.parameters, bool(self.strict))


class ToolDef(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: ToolName


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Annotated[
    Literal["none", "auto", "required"] | NamedToolChoice,
    Field(description="none: no tools offered; auto (default with tools): text, or calls after the trigger "
                      "`<tool_call>`; required: one or more calls; a named function: exactly that call"),
]  # fmt: skip


def _text_only(modalities: list[str]) -> list[str]:
    if modalities != ["text"]:
        raise ValueError('not supported: output modalities other than text; give ["text"] or leave it out')
    return modalities


def refused(why: str) -> Any:
    """A field we know and do not support: given (not null), it is a 400 naming it, not silently dropped."""

    def check(value: Any) -> Any:
        if value is not None:
            raise ValueError(f"not supported: {why}")
        return value

    return Annotated[Any, AfterValidator(check), Field(description=f"not supported (400 if given): {why}")]


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=lambda: dict(JSON_OBJECT), alias="schema")
    strict: bool | None = Field(
        None, description="true: a keyword the grammar cannot enforce is an error; otherwise it is ignored"
    )


class TextFormat(BaseModel):
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
BnfSchema = Annotated[
    str,
    Field(
        max_length=65536,
        description="AI00 BNF grammar (`<start> ::= ...`); the output follows it and ends when it is complete",
    ),
]


# Sampling fields of other servers that would change the output if this server dropped them silently: refused
# (a 400 naming the field) unless null or their neutral value, so clients that send every field keep working.
# field -> (neutral value, what to use here instead)
UNSUPPORTED_SAMPLING: dict[str, tuple[Any, str]] = {
    "repetition_penalty": (1.0, "use presence_penalty / frequency_penalty (with half_life)"),
    "repeat_penalty": (1.0, "use presence_penalty / frequency_penalty (with half_life)"),
    "typical_p": (1.0, "use top_p, top_k or min_p"),
    "tfs_z": (1.0, "use top_p, top_k or min_p"),
    "top_a": (0.0, "use top_p, top_k or min_p"),
    "mirostat": (0, "use top_p, top_k or min_p"),
    "dry_multiplier": (0.0, "use presence_penalty / frequency_penalty"),
    "xtc_probability": (0.0, "use top_p, top_k or min_p"),
    "min_tokens": (0, "not supported"),
    "ignore_eos": (False, "not supported"),
    "stop_token_ids": ([], "use stop strings"),
    "bad_words": ([], "use logit_bias with -100"),
    "allowed_token_ids": (None, "use logit_bias or bnf_schema"),
    "use_beam_search": (False, "use best_of"),
    "length_penalty": (1.0, "not supported"),
    "prompt_logprobs": (None, "use echo with logprobs (completions)"),
    "logits_processors": (None, "not supported"),
    "grammar": (None, "use bnf_schema"),
    "json_schema": (None, "use response_format"),
    "guided_json": (None, "use response_format"),
    "guided_regex": (None, "use bnf_schema"),
    "guided_choice": (None, "use bnf_schema"),
    "guided_grammar": (None, "use bnf_schema"),
    "truncate_prompt_tokens": (None, "not supported"),
}


def refuse_unsupported(data: Any, table: dict[str, tuple[Any, str]]) -> None:
    """A 400 naming the first field of `table` that `data` sets to something other than its neutral value."""
    if not isinstance(data, dict):
        return
    for name, (neutral, instead) in table.items():
        value = data.get(name)
        if value is not None and value != neutral:
            raise ApiError(400, f"{name}: not supported by this server, and ignoring it would change the result; "
                                f"{instead}", param=name, code="unsupported_parameter")  # fmt: skip


class _Request(_RequestSampler):
    """Fields common to completions and chat. Unknown fields are ignored, as OpenAI clients send many, except
    those that would change the result (UNSUPPORTED_SAMPLING): they are refused."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        refuse_unsupported(data, UNSUPPORTED_SAMPLING)  # an ApiError (not a ValueError) leaves pydantic as it is
        return data

    model: str | None = Field(None, description=MODEL_FIELD)
    stop: OpenAIStop | None = None
    n: Annotated[int, Field(ge=1, le=64)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    state: str | None = Field(
        None, description="handle of a saved state (WebSocket state.save) to start from"
    )
    bnf_schema: BnfSchema | None = None
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the output is JSON that follows it (one of this and bnf_schema)"
    )
    user: str | None = None

    def stop_list(self) -> list[str]:
        return list(self.stop or [])

    def grammar_fields(self) -> dict[str, Any]:
        return {"bnf_schema": self.bnf_schema, "response_format": self.response_format}

    def sampler_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in REQUEST_SAMPLER}


MAX_PROMPTS = 64  # prompts of one completions request
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Prompt = str | TokenIds
Prompts = (str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)] | TokenIds
           | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)])  # fmt: skip
_PROMPT = TypeAdapter(Prompts)


class CompletionRequest(_Request):
    prompt: Prompts = Field("", description=f"the text to continue, token ids, or a list of either (at most "
                                            f"{MAX_PROMPTS}): choice i * n + j is prompt i's j-th")  # fmt: skip
    suffix: str | None = Field(None, description="refused unless empty: RWKV has no fill-in-the-middle")
    logprobs: declared("logprobs") | None = None  # type: ignore[valid-type]
    echo: bool = Field(False, description="the prompt comes back before each choice's text; with logprobs, so do "
                                          "the prompt tokens' logprobs (the first token's null)")  # fmt: skip
    best_of: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="generate best_of candidates (forked from one prefill) and return the n with the highest "
                          "cumulative logprob; not with stream"
    )  # fmt: skip

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt_shape(cls, v: Any) -> Any:
        """One message for every malformed prompt (a union's own errors name its members, not the mistake)."""
        try:
            return _PROMPT.validate_python(v)
        except ValidationError:
            raise ValueError(f"a string, a list of strings, a list of token ids (0..vocabulary size - 1) or a list of "
                             f"such lists; 1..{MAX_PROMPTS} prompts") from None

    @model_validator(mode="after")
    def _refuse_what_cannot_be_done(self) -> CompletionRequest:
        if self.suffix:
            raise ApiError(400, "suffix: not supported: RWKV is a left-to-right model with no fill-in-the-middle "
                                "training, so a text that must end with a suffix cannot be generated",
                           param="suffix", code="unsupported_parameter")  # fmt: skip
        if self.best_of is not None and self.best_of < self.n:
            raise ApiError(400, f"best_of: must be >= n ({self.n}), got {self.best_of}", param="best_of")
        if self.best_of is not None and self.best_of > self.n and self.stream:
            raise ApiError(400, "best_of: cannot be streamed (the best candidates are known only at the end)",
                           param="best_of")  # fmt: skip
        return self

    def prompts(self) -> list[Prompt]:
        """Each prompt: a text or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        return [p] if p and isinstance(p[0], int) else list(p)  # type: ignore[list-item]

    @property
    def candidates(self) -> int:
        """Branches generated per prompt: best_of, or n."""
        return self.best_of or self.n


class ChatCompletionRequest(_Request):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    names: Names | None = None
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: declared("logprobs") | None = None  # type: ignore[valid-type]
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = Field(
        None, description="functions the model may call; listed to it in a system turn (backend/tool_calls.py)"
    )
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = Field(True, description="false: at most one call per answer")
    reasoning_format: ReasoningFormat | None = Field(
        None, description="deepseek: a leading <think>...</think> goes to `reasoning_content`; none: all in "
                          "`content`; default: [chat] reasoning_format"
    )  # fmt: skip
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="none or minimal: the prompt closes the think block, for an answer without thinking; "
                          "the others leave thinking to the model (RWKV has no effort levels)"
    )  # fmt: skip
    functions: refused("the legacy `functions`; use `tools`") = None
    function_call: refused("the legacy `function_call`; use `tool_choice`") = None
    audio: refused("audio output") = None
    modalities: Annotated[list[str], AfterValidator(_text_only)] | None = Field(
        None, description='output modalities: only ["text"]'
    )
    web_search_options: refused("web search") = None

    def sampler_fields(self) -> dict[str, Any]:
        d = super().sampler_fields()
        d["max_tokens"] = self.max_completion_tokens or self.max_tokens
        return d

    def thinking(self) -> bool | None:
        """False when reasoning_effort asks for no thinking; None: the model decides."""
        return False if self.reasoning_effort in ("none", "minimal") else None

    def tool_policy(self) -> ToolPolicy:
        """tools + tool_choice + parallel_tool_calls; a choice that names no given tool is a 400."""
        tools = tuple(t.function.as_tool() for t in self.tools or ())
        choice = self.tool_choice if self.tool_choice is not None else ("auto" if tools else "none")
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in {t.name for t in tools}:
                raise ApiError(400, f"tool_choice: no tool named '{choice.function.name}' in `tools`",
                               param="tool_choice")  # fmt: skip
            return ToolPolicy(tools, "required", choice.function.name, parallel=False)
        if choice == "required" and not tools:
            raise ApiError(400, 'tool_choice: "required" needs `tools`', param="tool_choice")
        return ToolPolicy(tools, choice, None, self.parallel_tool_calls)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=256)]
        | Annotated[list[Annotated[int, Field(ge=0, lt=65536)]], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[Annotated[int, Field(ge=0, lt=65536)]], Field(min_length=1)]],
            Field(min_length=1, max_length=256),
        ]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None, description="not supported: must be omitted or equal the model's n_embd"
    )
    user: str | None = None


class ChooseRequest(BaseModel):
    """AI00's multiple-choice scoring; the computation is documented in backend/chooses.py."""

    model_config = ConfigDict(extra="ignore")

    input: str | Annotated[list[str], Field(max_length=256)] = Field(
        "", description="the context (a list is joined with no separator); empty: a document start"
    )
    choices: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=64)] = Field(
        description="continuations to rank, each tokenized on its own (give it its leading space)"
    )
    calibrate: bool = Field(
        False, description="divide each choice's likelihood by its likelihood after a neutral context "
                           "(END_OF_TEXT): perplexity = ppl(choice | input) / ppl(choice | neutral)"
    )  # fmt: skip
    state: str | None = Field(None, description="initial state id or saved-state handle to start from")
    model: str | None = Field(None, description=MODEL_FIELD)

    def input_text(self) -> str:
        return self.input if isinstance(self.input, str) else "".join(self.input)


# ---- REST responses ----


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ai00"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="JSON text following the tool's parameters")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = Field(None, description="the thinking before the answer (reasoning_format "
                                                            "deepseek); absent when the model did not think")
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ChooseData(BaseModel):
    object: Literal["choice"] = "choice"
    index: int = Field(description="position in the request's `choices`")
    rank: int = Field(description="0: the best (lowest perplexity)")
    choice: str
    perplexity: float = Field(description="exp(-mean log p(choice tokens | input)); calibrated: divided by the "
                                          "same after the neutral context")  # fmt: skip


class ChooseUsage(BaseModel):
    prompt_tokens: int
    choice_tokens: int
    total_tokens: int = Field(description="tokens the engine ran: the input once, each choice but its last token "
                                          "(twice with calibrate, the neutral context once more)")  # fmt: skip


class ChooseResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ChooseData] = Field(description="sorted by rank")
    model: str
    usage: ChooseUsage


# ---- WebSocket frames (see shared/ws-protocol.md) ----


class WsParams(_WsSampler):
    """Sampler params of a generation; unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")

    bnf_schema: BnfSchema | None = None
    json_schema: dict[str, Any] | None = Field(None, description="JSON schema the output follows (strict)")

    def set_fields(self, keep_none: bool = False) -> dict[str, Any]:
        """The fields the client gave; an explicit null counts as not given (an update keeps it: there, null
        removes seed/logprobs)."""
        given = self.model_dump(exclude_unset=True)
        return given if keep_none else {k: v for k, v in given.items() if v is not None}


_Id = Annotated[str, Field(min_length=1, max_length=128)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionUpdateFrame(_Frame):
    type: Literal["session.update"]
    defaults: WsParams | None = None
    model: str | None = None


class GenerateFrame(_Frame):
    type: Literal["generate"]
    id: _Id
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    names: Names | None = None
    params: WsParams | None = None
    n: Annotated[int, Field(ge=1, le=64)] = 1
    state: str | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self


class UpdateFrame(_Frame):
    type: Literal["update"]
    id: _Id
    params: WsParams


class CancelFrame(_Frame):
    type: Literal["cancel"]
    id: _Id = Field(description='a live id, or "*" for all of this socket\'s generations')


class StateSaveFrame(_Frame):
    type: Literal["state.save"]
    id: _Id
    branch: Annotated[int, Field(ge=0, le=63)] = 0


class PingFrame(_Frame):
    type: Literal["ping"]
    data: Any = None


ClientFrame = Annotated[
    SessionUpdateFrame | GenerateFrame | UpdateFrame | CancelFrame | StateSaveFrame | PingFrame,
    Field(discriminator="type"),
]
CLIENT_FRAME = TypeAdapter(ClientFrame)
CLIENT_FRAME_TYPES = ("session.update", "generate", "update", "cancel", "state.save", "ping")


# ---- server -> client frames (written by api/ws.py with orjson; frontend/src/lib/protocol.ts mirrors them) ----


class OutFrame(BaseModel):
    """A frame we send. Fields in OMIT_IF_NONE are left out when None (the protocol's optional fields)."""

    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> bytes:
        d = self.model_dump()
        for key in self.OMIT_IF_NONE:
            if d.get(key) is None:
                d.pop(key, None)
        return orjson.dumps(d)


class EffectiveParams(BaseModel):
    """The sampler params a generation runs with (sampling/params.py's SamplerParams, every field set)."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    half_life: float
    stop: list[str]
    seed: int | None
    logprobs: int | None
    logit_bias: dict[str, float]


class ServerInfo(BaseModel):
    name: str
    version: str


class ModelSummary(BaseModel):
    id: str
    version: str
    size: int | None = Field(description="bytes of the model file")
    n_layer: int
    n_embd: int
    n_vocab: int
    precision: str
    quant: int
    quant_type: str


class SessionLimits(BaseModel):
    max_batch: int
    max_tokens: int
    max_message_bytes: int
    max_n: int


class SessionCreatedFrame(OutFrame):
    type: Literal["session.created"] = "session.created"
    protocol: int = 1
    server: ServerInfo
    model: ModelSummary
    limits: SessionLimits
    defaults: EffectiveParams


class GenerationStartedFrame(OutFrame):
    type: Literal["generation.started"] = "generation.started"
    id: str
    prompt_tokens: int
    cached_tokens: int
    params: EffectiveParams


class TokenLogprobOut(BaseModel):
    token: int
    logprob: float
    top: list[tuple[int, float]]


class DeltaFrame(OutFrame):
    OMIT_IF_NONE = ("logprobs",)

    type: Literal["delta"] = "delta"
    id: str
    branch: int
    text: str
    tokens: list[int]
    logprobs: list[TokenLogprobOut] | None = None


class UpdatedFrame(OutFrame):
    type: Literal["updated"] = "updated"
    id: str
    params: EffectiveParams
    at_token: int


class DoneUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class DoneTimings(BaseModel):
    queue_ms: float
    prefill_ms: float
    decode_tok_per_s: float


class DoneFrame(OutFrame):
    type: Literal["done"] = "done"
    id: str
    branch: int
    finish_reason: Literal["stop", "length", "cancelled", "grammar", "error"]
    text: str
    usage: DoneUsage
    timings: DoneTimings


class StateSavedFrame(OutFrame):
    type: Literal["state.saved"] = "state.saved"
    id: str
    handle: str
    bytes: int


class PongFrame(OutFrame):
    type: Literal["pong"] = "pong"
    data: Any = None


class ErrorFrame(OutFrame):
    OMIT_IF_NONE = ("id", "param")

    type: Literal["error"] = "error"
    id: str | None = None
    code: str
    message: str
    param: str | None = None


SERVER_FRAMES = (SessionCreatedFrame, GenerationStartedFrame, DeltaFrame, UpdatedFrame, DoneFrame, StateSavedFrame,
                 PongFrame, ErrorFrame)  # fmt: skip


GRAMMAR_FIELDS = ("bnf_schema", "json_schema", "response_format")


async def request_grammar(fields: dict[str, Any], compile: Callable[[GrammarRequest], Awaitable[Grammar]],
                          prefix: str = "") -> Grammar | None:  # fmt: skip
    """The grammar a request asks for (`bnf_schema`, the WebSocket `json_schema` or OpenAI's `response_format`),
    compiled by `compile` (off the event loop, in a worker: backend/grammar/worker.py); a bad or too costly
    one is a 400 naming the field, the limit and, for BNF, the line and column."""
    fmt = fields.get("response_format")
    asked = [k for k in GRAMMAR_FIELDS if fields.get(k) is not None and not isinstance(fields[k], TextFormat)]
    if len(asked) > 1:
        raise ApiError(400, f"{prefix}{asked[1]}: give only one of {', '.join(asked)}", param=prefix + asked[1])
    if not asked:
        return None
    key = asked[0]
    param = prefix + (f"{key}.json_schema.schema" if isinstance(fmt, JsonSchemaFormat) else key)
    if key == "bnf_schema":
        req = GrammarRequest("bnf", fields[key])
    elif key == "json_schema":
        req = GrammarRequest("json_schema", fields[key])
    elif isinstance(fmt, JsonSchemaFormat):
        req = GrammarRequest("json_schema", fmt.json_schema.schema_, strict=bool(fmt.json_schema.strict))
    else:
        req = GrammarRequest("json_schema", JSON_OBJECT)
    try:
        if req.kind == "json_schema" and (depth := nesting_depth(req.payload)) > MAX_SCHEMA_DEPTH:  # before pickling
            raise GrammarError(f"schema too deep: {depth} levels of nesting, the limit is {MAX_SCHEMA_DEPTH}")
        return await compile(req)
    except GrammarError as e:
        raise ApiError(400, f"{param}: {e}", param=param, code="invalid_grammar") from None
