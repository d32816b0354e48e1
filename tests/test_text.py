"""The world's word-level text tokenizer and the plain prompt format: exact round trips, single-token grid
numbers, special tokens declared by name, clear prompt errors."""

from __future__ import annotations

import random
import re

import pytest
import torch
from transformers import AutoTokenizer

from thinkdraw.plan import GRID as PLAN_GRID
from thinkdraw.plan import Plan, PlanObject, parse_plan
from thinkdraw.policy.formats import (
    PromptError,
    decode_text,
    image_position_ids,
    named_token_id,
    normalize_prompt,
    prompt_format,
    special_ids,
)
from thinkdraw.world.data import world_example
from thinkdraw.world.layout import random_layout
from thinkdraw.world.model import (
    BOI,
    BOS,
    SPECIALS,
    THINK,
    UNK,
    build_tokenizer,
    image_position_token,
    world_words,
)
from thinkdraw.world.plans import plan_of_scene
from thinkdraw.world.splits import load_split

torch.set_num_threads(1)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return prompt_format(tokenizer).context(prompt, think=False)


def declared(tokenizer) -> tuple:
    """Everything the policy reads from a tokenizer's declarations."""
    return special_ids(tokenizer), named_token_id(tokenizer, "think_token"), named_token_id(tokenizer, "eoi_token")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_every_test_prompt_round_trips(tokenizer):
    records = load_split("test")
    assert len(records) == 474
    unk = tokenizer.convert_tokens_to_ids(UNK)
    for record in records:
        ids = encode_prompt(tokenizer, record["prompt"])
        assert ids[0] == tokenizer.convert_tokens_to_ids(BOS)
        assert unk not in ids
        assert len(ids) == 1 + len(re.findall(r"\w+|[^\w\s]", record["prompt"]))  # one per word or comma
        assert decode_text(tokenizer, ids) == record["prompt"]


def test_every_shipped_prompt_is_in_the_vocabulary(tokenizer):
    for split in ("train", "val"):
        for record in load_split(split):
            encode_prompt(tokenizer, record["prompt"])  # raises PromptError on an unknown word


def test_plans_round_trip(tokenizer):
    rng = random.Random(0)
    texts = [plan_of_scene(random_layout(rng, rng.randint(1, 8))).text() for _ in range(50)]
    texts += [plan_of_scene(random_layout(rng, 3), with_color=False).text()]
    texts += [world_example(r, random.Random(i)).plan for i, r in enumerate(load_split("test")[::20])]
    texts += [Plan((PlanObject("white star", (0, 0, PLAN_GRID, PLAN_GRID)),)).text()]
    unk = tokenizer.convert_tokens_to_ids(UNK)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids
        plan = parse_plan(text)
        phrase_words = sum(len(o.phrase.split()) for o in plan.objects)
        # per object: its words, then "( x , y ) , ( x , y )" = 11 tokens; ";" between objects
        assert len(ids) == phrase_words + 11 * len(plan.objects) + len(plan.objects) - 1
        assert decode_text(tokenizer, ids) == text


def test_grid_numbers_are_single_distinct_tokens(tokenizer):
    ids = [tokenizer(str(i), add_special_tokens=False)["input_ids"] for i in range(PLAN_GRID + 1)]
    assert all(len(x) == 1 for x in ids)
    flat = [x[0] for x in ids]
    assert len(set(flat)) == PLAN_GRID + 1
    assert tokenizer.convert_tokens_to_ids(UNK) not in flat
    assert tokenizer(str(PLAN_GRID + 1), add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids(UNK)
    ]


def test_special_tokens_have_distinct_ids(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIALS]
    assert ids == list(range(len(SPECIALS)))  # first in the vocabulary, in SPECIALS order
    special, think, eoi = declared(tokenizer)
    assert (special.pad, special.bos, special.boi, think, eoi) == tuple(
        tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", BOS, BOI, THINK, "<eoi>")
    )
    assert (tokenizer.boi_token, tokenizer.think_token, tokenizer.eoi_token) == (BOI, THINK, "<eoi>")
    assert prompt_format(tokenizer).name == "plain"
    for token in SPECIALS:  # each is one token when written in text, and decoding drops it
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]
    word = tokenizer.convert_tokens_to_ids("circle")
    assert decode_text(tokenizer, [special.bos, word, think, special.boi]) == "circle"
    assert len(tokenizer) == len(tokenizer.get_vocab())


def test_image_position_tokens_follow_the_words(tmp_path):
    tokenizer = build_tokenizer(image_positions=16)
    first = len(SPECIALS) + len(world_words())
    assert image_position_ids(tokenizer) == range(first, first + 16)
    assert tokenizer.convert_tokens_to_ids([image_position_token(k) for k in range(16)]) == list(
        range(first, first + 16)
    )
    assert len(tokenizer) == first + 16
    assert image_position_ids(build_tokenizer()) is None
    word = tokenizer.convert_tokens_to_ids("circle")
    assert decode_text(tokenizer, [word, first + 3]) == "circle"  # never shown in text
    tokenizer.save_pretrained(tmp_path)
    assert declared(AutoTokenizer.from_pretrained(tmp_path)) == declared(tokenizer)


def test_prompts_are_normalised(tokenizer):
    assert normalize_prompt("  A Photo  of a RED circle. ") == "a photo of a red circle"
    assert encode_prompt(tokenizer, "A photo of a Red Circle.") == encode_prompt(tokenizer, "a photo of a red circle")


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("a photo of a dog", ["'dog'"]),
        ("a photo of a zebra and a dog", ["'dog', 'zebra'"]),  # every unknown word, sorted
        ("a photo of a red circle!", ["'!'"]),
    ],
)
def test_unknown_words_are_named(tokenizer, prompt, words):
    with pytest.raises(PromptError) as info:
        encode_prompt(tokenizer, prompt)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the model does not know ")
    for word in words:
        assert word in message
    assert "'circle'" not in message and "'photo'" not in message


@pytest.mark.parametrize("prompt", ["", "   ", ".", " . "])
def test_empty_prompt_is_an_error(tokenizer, prompt):
    with pytest.raises(PromptError, match=r"^the prompt is empty$"):
        encode_prompt(tokenizer, prompt)


def test_saved_tokenizer_loads_equal(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert declared(loaded) == declared(tokenizer)
    assert loaded.convert_tokens_to_ids([BOI, THINK]) == tokenizer.convert_tokens_to_ids([BOI, THINK])
    rng = random.Random(1)
    plans = [plan_of_scene(random_layout(rng, 4)).text() for _ in range(5)]
    for text in [r["prompt"] for r in load_split("test")[::7]] + plans:
        assert (
            loaded(text, add_special_tokens=False)["input_ids"]
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    with pytest.raises(PromptError, match="'dog'"):
        encode_prompt(loaded, "a photo of a dog")
