"""Wire types of OpenAI's Responses API (/v1/responses): the request, the response object and its usage.

Kept beside schemas.py (which holds the other doors' types) because the Responses shapes are many and only
api/responses.py uses them; validation and /api-docs both come from these models, as for every route.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from backend.api.schemas import (
    ApiError,
    BnfSchema,
    JsonObjectFormat,
    JsonSchemaFormat,
    JsonSchemaSpec,
    Names,
    OpenAIStop,
    TextFormat,
)
from backend.sampling.params import TUNABLE, declared, optional_fields
from backend.tool_calls import Tool, ToolPolicy

# max_tokens is `max_output_tokens` here; the other sampler fields keep their names
_ResponsesSampler = create_model(  # type: ignore[call-overload]
    "_ResponsesSampler", **optional_fields((*(f for f in TUNABLE if f != "max_tokens"), "seed"))
)


class InputText(BaseModel):
    """A text part of an input message; `output_text` is how an assistant turn comes back as input."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text"]
    text: str


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(BaseModel):
    """A call the model made (an earlier response's output item, sent back as input)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    """A tool's result for the call `call_id`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str


class ReasoningInputItem(BaseModel):
    """An earlier response's reasoning item sent back: accepted and left out of the prompt (a model reads its
    past answers without their thinking)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["reasoning"]


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem | ReasoningInputItem


class FunctionTool(BaseModel):
    """Responses' flat form of a function tool (chat nests it under `function`)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def as_tool(self) -> Tool:
        return Tool(self.name, self.description, self.parameters, bool(self.strict))


class NamedFunction(BaseModel):
    type: Literal["function"]
    name: str


class Reasoning(BaseModel):
    model_config = ConfigDict(extra="ignore")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        None, description='"none" or "minimal": the think block is closed in the prompt (no thinking)'
    )


class JsonSchemaTextFormat(BaseModel):
    """The Responses API's flat form of a JSON-schema output format (chat's `response_format` nests it)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    type: Literal["json_schema"]
    name: str = Field("response", max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Annotated[TextFormat | JsonObjectFormat | JsonSchemaTextFormat, Field(discriminator="type")] | None = None


class ResponseRequest(_ResponsesSampler):
    """POST /v1/responses. Unknown OpenAI fields are ignored, as OpenAI clients send many."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="a served model (GET /v1/models; unknown: the default unless "
                              "strict_model_names); a follow-up continues with its previous response's model")
    input: str | Annotated[list[InputItem], Field(min_length=1)] = Field(
        description="a user message's text, or items: messages (role + text or input_text parts), function_call "
                    "and function_call_output (a tool loop), reasoning (ignored)"
    )  # fmt: skip
    instructions: str | None = Field(
        None, description="a system message before the input; not carried over by previous_response_id "
                          "(a different one makes the follow-up prefill the whole conversation)"
    )  # fmt: skip
    max_output_tokens: declared("max_tokens") | None = None  # type: ignore[valid-type]
    stop: OpenAIStop | None = None
    stream: bool = False
    store: bool = Field(True, description="keep the response (GET /v1/responses/{id}, previous_response_id)")
    previous_response_id: str | None = Field(
        None, description="continue that stored response's conversation from its saved RWKV state: only the new "
                          "input's tokens are prefilled (usage.input_tokens_details.cached_tokens counts the rest)"
    )  # fmt: skip
    text: TextConfig | None = Field(None, description="text.format: text, json_object or json_schema")
    bnf_schema: BnfSchema | None = None
    names: Names | None = None
    tools: list[FunctionTool] | None = Field(
        None, description="function tools, listed in the prompt as for chat completions; calls come back as "
                          "function_call output items (backend/tool_calls.py)"
    )  # fmt: skip
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool = True
    reasoning: Reasoning | None = None
    background: bool | None = Field(None, description="refused when true: responses run in the foreground")
    conversation: Any = Field(None, description="refused: no Conversations API here (use previous_response_id)")
    prompt: Any = Field(None, description="refused: no stored prompt templates here")
    metadata: dict[str, str] | None = None
    user: str | None = None

    def items(self) -> list[InputItem]:
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return self.input

    def thinking(self) -> bool | None:
        """False when reasoning.effort asks for no thinking; None: the model decides."""
        effort = self.reasoning.effort if self.reasoning is not None else None
        return False if effort in ("none", "minimal") else None

    def tool_policy(self) -> ToolPolicy:
        """tools + tool_choice + parallel_tool_calls; a choice that names no given tool is a 400."""
        tools = tuple(t.as_tool() for t in self.tools or ())
        choice = self.tool_choice if self.tool_choice is not None else ("auto" if tools else "none")
        if isinstance(choice, NamedFunction):
            if choice.name not in {t.name for t in tools}:
                raise ApiError(400, f"tool_choice: no tool named '{choice.name}' in `tools`", param="tool_choice")
            return ToolPolicy(tools, "required", choice.name, parallel=False)
        if choice == "required" and not tools:
            raise ApiError(400, 'tool_choice: "required" needs `tools`', param="tool_choice")
        return ToolPolicy(tools, choice, None, self.parallel_tool_calls)

    def sampler_fields(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in (*TUNABLE, "seed") if name != "max_tokens"}
        return {**fields, "max_tokens": self.max_output_tokens, "stop": list(self.stop or [])}

    def grammar_fields(self) -> dict[str, Any]:
        """The output grammar as the other doors ask for it (chat's response_format form)."""
        fmt = self.text.format if self.text is not None else None
        if isinstance(fmt, JsonSchemaTextFormat):
            spec = JsonSchemaSpec.model_validate({"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict})
            fmt = JsonSchemaFormat(type="json_schema", json_schema=spec)
        return {"bnf_schema": self.bnf_schema, "response_format": fmt}


# ---- the response object ----


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputReasoning(BaseModel):
    """The thinking of a model that thinks before answering (<think>...</think>), as [chat] reasoning_format
    splits it."""

    type: Literal["reasoning"] = "reasoning"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str = Field(description="a JSON text that follows the tool's parameters schema")
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = Annotated[OutputMessage | OutputReasoning | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = Field(description="tokens not prefilled: the saved state of previous_response_id or "
                                           "the prefix cache already held them")  # fmt: skip
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = Field(description="the whole conversation's tokens, cached ones included")
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    model: str
    output: list[OutputItem]
    instructions: str | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    store: bool = True
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, str] = "none"
    parallel_tool_calls: bool = True
    truncation: Literal["disabled"] = "disabled"
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    usage: ResponseUsage | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True
