"""How a Janus checkpoint's text is laid out: its special tokens and its prompt format.

Special tokens are read from what the tokenizer declares, as transformers' JanusProcessor reads
them: `bos_token`, `pad_token`, and the named `boi_token` (begin of image); a world tokenizer also
declares `think_token`. Nothing is looked up by a guessed name.

Two prompt formats, one per model family:
    plain  [bos] prompt words ([think])                       the shapes world (a word-level tokenizer
                                                              with a think token)
           [bos] prompt [revise] plan [feedback] words        a second try (PARM++): the earlier plan and
           ([think])                                          what was wrong with its picture
    chat   [bos] the chat template's user turn (the prompt,   Janus-Pro and any checkpoint without a
           plus a reasoning instruction when thinking), then  think token
           its assistant prefix
Either way the plan (when there is one) follows, then [boi] and the image tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from thinkdraw.checkpoint import CheckpointError
from thinkdraw.engine.sampling import SpecialIds
from thinkdraw.errors import ThinkdrawError

# Our words: what a chat model is asked before it draws (GoT-R1's plan format, thinkdraw.plan).
REASONING_INSTRUCTION = (
    "First plan the picture: name every object with its colour and other attributes, each followed by "
    "its box as (x1,y1),(x2,y2) on a 0-1000 grid with the origin at the top left, entries separated by "
    "semicolons. Then draw it."
)
RATIONALE_INSTRUCTION = (
    "First describe the picture in one or two plain sentences: every object with its count, colour and other "
    "attributes worked out, and where it stands. Then draw it."
)
INSTRUCTIONS = {"plan": REASONING_INSTRUCTION, "rationale": RATIONALE_INSTRUCTION}
# A second try (PARM++'s self-correction): what a chat model is told of its first one.
REVISION_TEXT = "Your earlier plan was: {plan}\nWhat was wrong with its picture: {feedback}\nPlan again, fixing that."
# The chat layout when a tokenizer carries no chat template of its own (Janus-Pro's conversation markers).
DEFAULT_CHAT = "<|User|>: {text}\n\n<|Assistant|>:"


class PromptError(ThinkdrawError):
    """A prompt the model cannot read."""


@dataclass(frozen=True)
class Revision:
    """A second try at a prompt (PARM++): the reasoning written before and what a judge found wrong with the
    image drawn after it. The policy then writes new reasoning and draws again."""

    reasoning: str
    feedback: str


def named_token_id(tokenizer, name: str) -> int | None:
    """The id of a token the tokenizer declares under `name` (boi_token, think_token, ...), or None."""
    token = getattr(tokenizer, name, None)
    if not isinstance(token, str):
        return None
    index = tokenizer.convert_tokens_to_ids(token)
    return index if isinstance(index, int) and index != tokenizer.unk_token_id else None


def image_position_ids(tokenizer) -> range | None:
    """Ids of `<img_pos_0>`, `<img_pos_1>`, ... (consecutive): a model's learned 2-D image positions."""
    vocab = tokenizer.get_vocab()
    first = vocab.get("<img_pos_0>")
    if first is None:
        return None
    count = 0
    while vocab.get(f"<img_pos_{count}>") == first + count:
        count += 1
    return range(first, first + count)


def special_ids(tokenizer) -> SpecialIds:
    """The engine's special ids from the tokenizer's declarations; CheckpointError names what is missing."""
    found = {"bos_token": tokenizer.bos_token_id, "pad_token": tokenizer.pad_token_id}
    found["boi_token"] = named_token_id(tokenizer, "boi_token")
    missing = [name for name, index in found.items() if index is None]
    if missing:
        raise CheckpointError(f"the tokenizer declares no {', '.join(missing)} (a Janus tokenizer needs all three)")
    return SpecialIds(
        pad=found["pad_token"],
        bos=found["bos_token"],
        boi=found["boi_token"],
        image_positions=image_position_ids(tokenizer),
    )


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no final full stop."""
    return " ".join(prompt.lower().strip().rstrip(".").split())


@dataclass
class PlainFormat:
    """[bos] prompt words ([think] or [rationale]): the shapes world's format, for a word-level tokenizer."""

    tokenizer: object
    think: int  # the think token's id: a plan follows
    rationale: int | None = None  # the rationale token's id: a written rationale follows (None: not learned)
    revise: int | None = None  # the revise and feedback tokens' ids: a second try (None: not learned)
    feedback: int | None = None
    name: str = "plain"
    hint: str = ""  # added to an unknown-word error (where the model's words are listed)

    def _words(self, text: str, what: str = "prompt") -> list[int]:
        text = normalize_prompt(text)
        if not text:
            raise PromptError(f"the {what} is empty")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        unknown = unknown_words(self.tokenizer, text, ids)
        if unknown:
            hint = f" ({self.hint})" if self.hint else ""
            raise PromptError(f"the model does not know {', '.join(repr(w) for w in unknown)}{hint}")
        return ids

    def context(self, prompt: str, think: bool, reasoning: str = "plan", revision: Revision | None = None) -> list[int]:
        ids = [self.tokenizer.bos_token_id] + self._words(prompt)
        if not think:
            if revision is not None:
                raise ThinkdrawError("a second try needs thinking: it rewrites the reasoning")
            return ids
        if reasoning == "rationale" and self.rationale is None:
            raise ThinkdrawError("this model has no rationale token: it was not taught to write rationales")
        if revision is not None:
            if self.revise is None:
                raise ThinkdrawError("this model has no revise token: it was not taught to take feedback")
            ids += [self.revise] + self._words(revision.reasoning, "earlier reasoning")
            ids += [self.feedback] + self._words(revision.feedback, "feedback")
        return ids + [self.rationale if reasoning == "rationale" else self.think]


@dataclass
class ChatFormat:
    """The checkpoint's chat format (its own template, else Janus-Pro's markers), the user turn holding the
    prompt and, when thinking, the reasoning instruction; the assistant prefix ends the context."""

    tokenizer: object
    name: str = "chat"

    def context(self, prompt: str, think: bool, reasoning: str = "plan", revision: Revision | None = None) -> list[int]:
        text = " ".join(prompt.strip().split())
        if not text:
            raise PromptError("the prompt is empty")
        if revision is not None and not think:
            raise ThinkdrawError("a second try needs thinking: it rewrites the reasoning")
        user = f"{text}\n{INSTRUCTIONS[reasoning]}" if think else text
        if revision is not None:
            user += "\n" + REVISION_TEXT.format(plan=revision.reasoning, feedback=revision.feedback)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": user}]
            chat = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            chat = DEFAULT_CHAT.format(text=user)
        ids = self.tokenizer(chat, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ids if ids[:1] == [bos] else [bos] + ids


def prompt_format(tokenizer) -> PlainFormat | ChatFormat:
    """plain for a tokenizer that declares a think token (the world's; rationale, revise and feedback tokens too
    when it learned those), chat for every other."""
    think = named_token_id(tokenizer, "think_token")
    if think is None:
        return ChatFormat(tokenizer)
    named = [named_token_id(tokenizer, f"{name}_token") for name in ("rationale", "revise", "feedback")]
    return PlainFormat(tokenizer, think, *named)


def unknown_words(tokenizer, text: str, ids: list[int]) -> list[str]:
    """Words of `text` a tokenizer with an unk token cannot encode ([] when it has none, or all are known)."""
    unk = tokenizer.unk_token_id
    if unk is None or unk not in ids:
        return []
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    words = [w for w, _ in pre.pre_tokenize_str(text)] if pre is not None else text.split()
    vocab = tokenizer.get_vocab()
    return sorted({w for w in words if w not in vocab})


def decode_text(tokenizer, ids: list[int]) -> str:
    """Token ids -> readable plan text: words spaced, punctuation attached as plans write it."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    text = re.sub(r"\s+([,;)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    return re.sub(r",\s+(?=[\d(])", ",", text).strip()  # "(1,2),(3,4)" in plans; ", " between phrases
