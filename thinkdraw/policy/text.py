"""The world model's text tokenizer: one token per word, number or punctuation mark.

Built with the `tokenizers` library from the world's vocabulary (every word of every
prompt the generator can write, the plan's words, the grid numbers 0-1000) and saved in
Hugging Face format, so `AutoTokenizer.from_pretrained(model_dir)` loads it. Grid numbers
are single tokens so a planned box costs nine tokens, not twenty.

Sequences:
    [bos] prompt [boi] image                      draw directly
    [bos] prompt [think] plan [boi] image         think first: the plan ends when the model writes [boi]

Image positions. A world tokenizer also holds one token per image-token position, `<img_pos_0>` ...
`<img_pos_{N-1}>`, never written in text: their embedding rows are the world model's learned 2-D position
table, which the engine adds to image-token inputs (see `thinkdraw.engine.sampling`). They live in the
text embedding so that a standard Janus checkpoint carries them; Janus-Pro has none and draws unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from thinkdraw.errors import ThinkdrawError
from thinkdraw.world import prompts as world_prompts
from thinkdraw.world.spec import COLORS, NUMBERS, PLAN_GRID, PLURALS, RELATIONS, SHAPES

PAD, BOS, EOS, UNK, BOI, EOI, THINK = "<pad>", "<bos>", "<eos>", "<unk>", "<boi>", "<eoi>", "<think>"
SPECIALS = (PAD, BOS, EOS, UNK, BOI, EOI, THINK)
_PRE = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


class PromptError(ThinkdrawError):
    """A prompt the world model cannot read."""


def world_words() -> list[str]:
    """Every word the prompt generator and the plan format can write, sorted."""
    texts = ["a an photo of and the colour", " ".join(SHAPES), " ".join(PLURALS.values()), " ".join(COLORS)]
    texts += list(NUMBERS.values()) + list(RELATIONS)
    texts += list(world_prompts.COLOR_OF_THING)
    texts += [p for pair in world_prompts.SHAPE_BY_PROPERTY.values() for p in pair]
    texts += [t.format(n="") for forms in world_prompts.COUNT_BY_FACT.values() for t in forms]
    texts += [str(i) for i in range(PLAN_GRID + 1)] + ["( ) , ;"]
    words = {w for text in texts for w, _ in _PRE.pre_tokenize_str(text)}
    return sorted(words)


def image_position_token(k: int) -> str:
    return f"<img_pos_{k}>"


def build_tokenizer(image_positions: int = 0) -> PreTrainedTokenizerFast:
    """The world tokenizer; `image_positions` position tokens (one per image token) after the words."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word in world_words():
        vocab.setdefault(word, len(vocab))
    positions = [image_position_token(k) for k in range(image_positions)]
    for token in positions:
        vocab[token] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = _PRE
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[BOI, EOI, THINK, *positions],
    )


@dataclass(frozen=True)
class TextIds:
    pad: int
    bos: int
    boi: int
    eoi: int
    think: int
    unk: int
    image_positions: range | None  # ids of <img_pos_0>, <img_pos_1>, ... (consecutive); None without them

    @classmethod
    def of(cls, tokenizer) -> TextIds:
        ids = tokenizer.convert_tokens_to_ids
        return cls(ids(PAD), ids(BOS), ids(BOI), ids(EOI), ids(THINK), ids(UNK), image_position_ids(tokenizer))


def image_position_ids(tokenizer) -> range | None:
    vocab = tokenizer.get_vocab()
    first = vocab.get(image_position_token(0))
    if first is None:
        return None
    count = 0
    while vocab.get(image_position_token(count)) == first + count:
        count += 1
    return range(first, first + count)


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no final full stop."""
    return " ".join(prompt.lower().strip().rstrip(".").split())


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """[bos] + prompt tokens; PromptError names the words the model does not know."""
    text = normalize_prompt(prompt)
    if not text:
        raise PromptError("the prompt is empty")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = tokenizer.convert_tokens_to_ids(UNK)
    if unk in ids:
        vocab = tokenizer.get_vocab()
        unknown = sorted({w for w, _ in _PRE.pre_tokenize_str(text) if w not in vocab})
        raise PromptError(
            f"the world model does not know {', '.join(repr(w) for w in unknown)} (its words: `thinkdraw world vocab`)"
        )
    return [tokenizer.convert_tokens_to_ids(BOS)] + ids


def decode_text(tokenizer, ids: list[int]) -> str:
    """Token ids -> readable text: words spaced, punctuation attached as written in plans."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    text = re.sub(r"\s+([,;)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    return re.sub(r",\s+(?=[\d(])", ",", text)  # "(1,2),(3,4)" in plans; ", " between prompt phrases
