"""The transformers VLM chat backend on tiny random LLaVA and Qwen2.5-VL judges: exact batched answers, log-probs
that are the model's, teacher-forced inputs that match inference, a judge that learns, and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from tiny_judges import save_tiny_llava_judge, save_tiny_qwen_judge, tiny_llava_judge, tiny_qwen_judge
from transformers import LlamaConfig, LlamaForCausalLM

from thinkdraw.judges.base import JudgeError, Query, yes_probability
from thinkdraw.judges.chat import TOP_LOGPROBS, ChatJudge, Turn
from thinkdraw.judges.prompts import ground_text, question_text
from thinkdraw.judges.vlm import IGNORE, VLMChat, prompt_words

SAVERS = {"llava": save_tiny_llava_judge, "qwen": save_tiny_qwen_judge}
BUILDERS = {"llava": tiny_llava_judge, "qwen": tiny_qwen_judge}


def picture(colour: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=colour)
    return image


RED, BLUE = picture("red"), picture("blue")
RED_QUERY = Query(prompt="a red circle", image=RED)
BLUE_QUERY = Query(prompt="a red circle", image=BLUE)
# different text lengths, images of different sizes (Qwen: 9, 6 and 4 image tokens), two text-only turns
MIXED = [
    Turn(question_text(RED_QUERY, "outcome"), RED),
    Turn("Answer yes or no.", picture("green", (64, 40))),
    Turn(question_text(Query(prompt="two blue squares", plan="a blue square", progress=0.25), "process"), BLUE),
    Turn("Answer yes or no."),
    Turn(question_text(Query(prompt="a red circle left of a blue square", plan="a red circle"), "semantic")),
]


@pytest.fixture(scope="module", params=sorted(SAVERS))
def folder(request, tmp_path_factory) -> Path:
    return SAVERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def chat(folder) -> VLMChat:
    return VLMChat.load(str(folder))


def direct_logprobs(chat: VLMChat, turn: Turn) -> torch.Tensor:
    """log_softmax of the last prompt position of a plain forward of one unpadded turn."""
    with torch.no_grad():
        logits = chat.model(**chat.prompt_inputs([turn])).logits  # [1, T, V]
    return torch.log_softmax(logits[0, -1].float(), dim=-1)  # [V]


def candidates(chat: VLMChat, logprobs: torch.Tensor) -> dict[str, float]:
    top = logprobs.topk(TOP_LOGPROBS)
    return {chat.tokenizer.decode([i]): lp for lp, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)}


def assert_close_candidates(got: dict[str, float], expected: dict[str, float], atol: float = 1e-5):
    assert got.keys() == expected.keys()
    assert max(abs(got[token] - expected[token]) for token in got) < atol


def word_logprob(chat: VLMChat, logprobs: torch.Tensor, word: str) -> float:
    """What answer_logprob reads for `word`: the top candidates that spell it, their probabilities added."""
    top = logprobs.topk(TOP_LOGPROBS)
    found = [
        lp
        for lp, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        if chat.tokenizer.decode([i]).strip().lower() == word
    ]
    return torch.logsumexp(torch.tensor(found), 0).item() if found else -math.inf


def train(chat: VLMChat, turns: list[Turn], answers: list[str], steps: int = 30, lr: float = 1e-3) -> list[float]:
    batch = chat.training_batch(turns, answers)
    optimizer = torch.optim.AdamW(chat.model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = chat.model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    chat.model.eval()
    return losses


# -- building, saving, loading


def test_tiny_judges_save_a_model_and_processor_folder(folder):
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }


def test_the_llava_tokenizer_reads_every_question_word_and_spells_numbers():
    chat = tiny_llava_judge()
    tokenizer = chat.tokenizer
    assert tokenizer.unk_token_id not in tokenizer(" ".join(prompt_words()))["input_ids"]
    text = 'The request is "a red circle". (120,40),(560,610) yes'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == text  # decoding gives the text back
    assert tokenizer.convert_ids_to_tokens(ids[-9:-5]) == ["5", "6", "0", ","]  # digits one by one
    inputs = chat.prompt_inputs([Turn("Answer yes or no.", RED)])
    assert (inputs["input_ids"] == chat.model.config.image_token_id).sum().item() == 64  # 8 x 8 patches, no CLS


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_save_then_load_answers_bit_for_bit(kind, tmp_path):
    built = BUILDERS[kind]()
    loaded = VLMChat.load(str(built.save(tmp_path)))
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    # alone and batched: the kernels' paths (which differ by 5e-7 on unaligned weights) depend on the shapes
    for turns in [[turn] for turn in MIXED] + [MIXED]:
        a, b = built.complete(turns, 4), loaded.complete(turns, 4)
        assert a == b  # texts and every first-token log-prob identical, to the bit
    assert len(a[0].first_logprobs) == TOP_LOGPROBS


# -- answering


def test_first_logprobs_are_the_log_softmax_of_a_direct_forward(chat):
    for turn in (MIXED[0], MIXED[3]):
        answer = chat.complete([turn], 3)[0]  # three steps: the log-probs must be the first step's
        assert_close_candidates(answer.first_logprobs, candidates(chat, direct_logprobs(chat, turn)))


def test_a_batch_answers_exactly_as_its_turns_one_by_one(chat):
    inputs = chat.prompt_inputs(MIXED[:3])
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left padding is exercised
    alone = [chat.complete([turn], 6)[0] for turn in MIXED]
    for max_batch in (16, 2):  # one forward per kind of turn, and chunks of two
        chat.max_batch = max_batch
        together = chat.complete(MIXED, 6)
        assert [a.text for a in together] == [a.text for a in alone]
        for a, b in zip(together, alone, strict=True):
            assert_close_candidates(a.first_logprobs, b.first_logprobs)
    chat.max_batch = 16
    assert chat.complete([], 6) == []


def test_decoding_under_left_padding_matches_a_full_forward(chat):
    """Every generated step's logits equal a cache-free forward of prompt + answer: the cached decode steps get
    the same positions as the prefill (Qwen2.5-VL's 3D rope positions with their per-row deltas included)."""
    from transformers import GenerationConfig

    inputs = chat.prompt_inputs(MIXED[:3])
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=4,
        min_new_tokens=4,
        pad_token_id=chat.pad_id,
        eos_token_id=chat.end_ids,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        out = chat.model.generate(**inputs, generation_config=config)
        B, T = inputs["input_ids"].shape
        full = dict(inputs, input_ids=out.sequences, attention_mask=torch.ones(B, 4, dtype=torch.long))
        full["attention_mask"] = torch.cat([inputs["attention_mask"], full["attention_mask"]], dim=1)
        if "mm_token_type_ids" in inputs:
            full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros(B, 4).long()], dim=1)
        logits = chat.model(**full).logits  # [B, T + 4, V]
    for k in range(4):
        torch.testing.assert_close(logits[:, T - 1 + k], out.logits[k], atol=1e-4, rtol=0)


def test_training_batch_scores_the_answer_and_end_of_turn_with_the_prompts_of_complete(chat):
    answers = ["yes", "(120,40),(560,610)", "no", "nothing", "7"]
    batch = chat.training_batch(MIXED, answers)
    B, T = batch["input_ids"].shape
    assert B == 5 and batch["labels"].shape == (B, T) and batch["attention_mask"].shape == (B, T)
    eos = chat.tokenizer.convert_ids_to_tokens(chat.end_ids[0])
    with torch.no_grad():
        logits = chat.model(**batch).logits  # [B, T, V]
    for b, (turn, answer) in enumerate(zip(MIXED, answers, strict=True)):
        scored = batch["labels"][b] != IGNORE
        assert chat.tokenizer.decode(batch["labels"][b][scored]).strip() == f"{answer}{eos}"
        prompt = chat.prompt_inputs([turn])["input_ids"][0]
        assert torch.equal(batch["input_ids"][b, : len(prompt)], prompt)  # the very prompt complete feeds
        assert not scored[: len(prompt)].any() and scored[len(prompt)]
        # the first answer position, right-padded in a batch, reads as the left-padded generation's first step
        teacher = candidates(chat, torch.log_softmax(logits[b, len(prompt) - 1].float(), dim=-1))
        assert_close_candidates(chat.complete([turn], 1)[0].first_logprobs, teacher)
    loss = chat.model(**batch).loss
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
    )
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    with pytest.raises(JudgeError, match="2 answers for 5 turns"):
        chat.training_batch(MIXED, answers[:2])


# -- a judge over it


@pytest.mark.parametrize("kind", sorted(SAVERS))
def test_chat_judge_yes_is_yes_probability_of_the_models_yes_and_no(kind, tmp_path):
    chat = VLMChat.load(str(SAVERS[kind](tmp_path)))
    # a few steps so that "yes" and "no" are among the first token's top candidates of a random judge
    train(
        chat,
        [Turn(question_text(RED_QUERY, "outcome"), RED), Turn(question_text(BLUE_QUERY, "outcome"), BLUE)],
        ["yes", "no"],
        steps=8,
    )
    queries = [RED_QUERY, BLUE_QUERY, Query(prompt="a blue circle", image=RED)]
    got = ChatJudge(chat).yes(queries, "outcome")
    for value, query in zip(got, queries, strict=True):
        direct = direct_logprobs(chat, Turn(question_text(query, "outcome"), query.image))
        expected = yes_probability(word_logprob(chat, direct, "yes"), word_logprob(chat, direct, "no"))
        assert 0 < value < 1
        assert value == pytest.approx(expected, abs=1e-5)


def test_a_tiny_llava_judge_learns_yes_no_and_a_box(tmp_path):
    chat = VLMChat.load(str(save_tiny_llava_judge(tmp_path)))
    judge = ChatJudge(chat)
    turns = [
        Turn(question_text(RED_QUERY, "outcome"), RED),
        Turn(question_text(BLUE_QUERY, "outcome"), BLUE),
        Turn(ground_text(RED_QUERY, "red circle"), RED),
    ]
    # (30 steps at 1e-3 leave the loss at 2.5 and red and blue apart by 0.66 to 0.42 only)
    losses = train(chat, turns, ["yes", "no", "(120,40),(560,610)"], steps=60, lr=3e-3)
    assert losses[0] == pytest.approx(math.log(len(chat.tokenizer)), abs=0.5)  # a random judge: about uniform
    assert losses[-1] < 0.1
    p_red, p_blue = judge.yes([RED_QUERY, BLUE_QUERY], "outcome")
    assert p_red > 0.9 and p_blue < 0.1
    assert judge.ground([RED_QUERY], ["red circle"]) == [(120, 40, 560, 610)]


# -- errors


def one_line_naming(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_missing_folder_or_one_without_config_is_a_judge_error(tmp_path):
    with pytest.raises(JudgeError) as error:
        VLMChat.load(str(tmp_path / "missing"))
    assert "no judge folder" in one_line_naming(error, tmp_path / "missing")
    with pytest.raises(JudgeError) as error:
        VLMChat.load(str(tmp_path))
    assert "no config.json" in one_line_naming(error, tmp_path)


def test_a_checkpoint_that_is_not_image_text_to_text_is_a_judge_error(tmp_path):
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(JudgeError) as error:
        VLMChat.load(str(tmp_path))
    assert "'llama' model, not an image-text-to-text one" in one_line_naming(error, tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing weight"])
def test_a_damaged_model_file_is_a_one_line_judge_error(damage, tmp_path):
    folder = save_tiny_llava_judge(tmp_path)
    weights = folder / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"not a safetensors file at all" * 100)
    elif damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    else:
        tensors = load_file(weights)
        tensors.pop(next(k for k in tensors if "lm_head" in k))
        save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(JudgeError) as error:
        VLMChat.load(str(folder))
    message = one_line_naming(error, folder)
    if damage == "missing weight":
        assert "missing keys" in message and "lm_head" in message
