"""Turn instruction rows into token ids and the roles of their tokens (DESIGN §2).

A formatted example has spans of text: the template (system prompt, role markers), the user text (the
instruction and its input; the instruction's own text is a span of its own) and, when teacher-forced, the
reference response. Each token gets role bits from
the character spans it overlaps (through the fast tokenizer's offset mapping); a scope is then a mask over
those bits. The response always follows the rendered prompt directly, so prompt tokens are identical whether
or not a response is appended.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError

SCOPES: tuple[str, ...] = ("instruction", "prompt", "response", "all", "instruction-only")
TEMPLATES: tuple[str, ...] = ("auto", "chat", "raw")

# Role bits of a token; a token straddling two spans carries both bits.
ROLE_USER = 1
ROLE_PROMPT = 2
ROLE_RESPONSE = 4
ROLE_OTHER = 8  # template text after the response start that is not the response itself
ROLE_INSTRUCTION = 16  # the instruction's own text, without the row's input (always also ROLE_USER)

RAW_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class FormatSettings:
    """How rows become token sequences and which tokens are counted."""

    scope: str = "instruction"
    template: str = "auto"
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise SparcomError(f"unknown scope {self.scope!r}; choose one of {', '.join(SCOPES)}")
        if self.template not in TEMPLATES:
            raise SparcomError(f"unknown template policy {self.template!r}; choose one of {', '.join(TEMPLATES)}")

    @property
    def needs_response(self) -> bool:
        return self.scope in ("response", "all")


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one row and the role bits of each token."""

    row_index: int
    category: str
    input_ids: tuple[int, ...]
    roles: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    def scope_mask(self, scope: str) -> tuple[bool, ...]:
        """Which tokens count under ``scope`` (the one place role bits become a mask: profile, NLL and tuning)."""
        return tuple(in_scope(role, scope) for role in self.roles)


def in_scope(role: int, scope: str) -> bool:
    """Whether a token with these role bits is counted under ``scope``."""
    if scope == "instruction":
        return bool(role & ROLE_USER)
    if scope == "prompt":
        return bool(role & (ROLE_PROMPT | ROLE_USER))
    if scope == "response":
        return bool(role & ROLE_RESPONSE)
    if scope == "all":
        return True
    if scope == "instruction-only":
        return bool(role & ROLE_INSTRUCTION)
    raise SparcomError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")


def pad_token_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def user_text(row: InstructionRow) -> str:
    """The user's turn: the instruction, then a blank line and the input when there is one."""
    instruction = row.instruction.strip()
    extra = row.input.strip()
    return f"{instruction}{RAW_SEPARATOR}{extra}" if extra else instruction


def resolve_template(tokenizer, template: str) -> str:
    """``auto`` becomes ``chat`` when the tokenizer has a chat template, otherwise ``raw``."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "raw"
    if template == "chat" and not has_chat:
        raise SparcomError("--template chat: this tokenizer has no chat template; use --template raw or auto")
    return template


def check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise SparcomError(
            f"tokenizer {type(tokenizer).__name__} has no offset mapping (not a fast tokenizer); "
            "sparcom needs a fast tokenizer (tokenizer.json) to map text spans to tokens"
        )


def render_prompt(row: InstructionRow, tokenizer, template: str, system_prompt: str | None) -> tuple[str, int, int, bool]:
    """The prompt text, the character span of the user text in it, and whether to add special tokens."""
    text = user_text(row)
    if template == "raw":
        prompt = f"{system_prompt.strip()}{RAW_SEPARATOR}{text}" if system_prompt else text
        start = len(prompt) - len(text)
        return prompt, start, len(prompt), True
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": text})
    try:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # templates raise their own exception types (e.g. no system role)
        raise SparcomError(f"row {row.id}: the chat template refused the conversation ({exc}); "
                           "drop --system-prompt or use --template raw") from None
    start = prompt.rfind(text)
    if start < 0:
        raise SparcomError(f"row {row.id}: the chat template changed the user text, so its tokens cannot be located; "
                           "use --template raw")
    return prompt, start, start + len(text), False


def encode_row(
    row: InstructionRow,
    row_index: int,
    tokenizer,
    template: str,
    system_prompt: str | None = None,
    with_response: bool = False,
) -> EncodedExample:
    """Tokenize one row (``template`` already resolved to chat or raw) and label each token's roles."""
    prompt, user_start, user_end, add_special = render_prompt(row, tokenizer, template, system_prompt)
    text = prompt
    response_start = response_end = len(prompt)
    if with_response:
        separator = RAW_SEPARATOR if template == "raw" else ""
        response_start = len(prompt) + len(separator)
        text = prompt + separator + row.output
        response_end = len(text)
    encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    instruction_end = user_start + len(row.instruction.strip())  # the user text starts with the instruction
    roles = []
    for start, end in encoded["offset_mapping"]:
        role = 0
        if end > start:
            if start < user_end and end > user_start:
                role |= ROLE_USER
            if start < instruction_end and end > user_start:
                role |= ROLE_INSTRUCTION
            if start < response_end and end > response_start:
                role |= ROLE_RESPONSE
        if start < len(prompt) or (end == start and start <= len(prompt)):
            role |= ROLE_PROMPT
        if role == 0:
            role = ROLE_OTHER
        roles.append(role)
    return EncodedExample(row_index, row.category, tuple(encoded["input_ids"]), tuple(roles))
