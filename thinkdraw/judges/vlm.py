"""A transformers VLM as a chat backend: any image-text-to-text checkpoint (LLaVA, Qwen2.5-VL, ...) answers turns.

    chat = VLMChat.load("Qwen/Qwen2.5-VL-3B-Instruct")    # or a local folder saved by VLMChat.save
    judge = ChatJudge(chat)                                # thinkdraw.judges.chat: our questions, their answers

`complete` answers greedily in batches, left-padded, so a batch answers exactly as its turns one by one; the
first answer step's log-probs come from the raw logits (no logits processors). `training_batch` builds the
teacher-forced inputs of the same prompts followed by given answers, which is what a judge trainer calls.

`new_llava_judge` builds an untrained LLaVA judge from scratch: a word-level tokenizer over our question
texts plus the words it is given, a small CLIP vision tower and a small Llama. The tests make tiny ones; the
shapes world makes its own judge with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from thinkdraw.judges.base import JudgeError, Query
from thinkdraw.judges.chat import ASKS, TOP_LOGPROBS, Completion, Turn, turn_for

IGNORE = -100  # the label of tokens that are not scored (the prompt, the padding)


class VLMChat:
    """A ChatBackend over a transformers image-text-to-text model and its processor."""

    def __init__(self, model, processor, max_batch: int = 16):
        if max_batch < 1:
            raise JudgeError(f"max_batch must be at least 1, not {max_batch}")
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "chat_template", None) is None:
            raise JudgeError("the judge's processor needs a tokenizer and a chat template")
        self.model, self.processor, self.max_batch = model, processor, max_batch
        self.tokenizer = processor.tokenizer
        self.end_ids = _end_of_turn_ids(model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_ids[0]

    @classmethod
    def load(cls, path_or_hub_id: str, device: str = "cpu", dtype=torch.float32, max_batch: int = 16) -> VLMChat:
        """A local folder (VLMChat.save, or any saved checkpoint) or a hub id; every weight must be in it."""
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        source = str(path_or_hub_id)
        local = Path(source).expanduser()
        if local.exists() or not _looks_like_hub_id(source):
            if not local.is_dir():
                raise JudgeError(f"no judge folder at {source}")
            if not (local / "config.json").is_file():
                raise JudgeError(f"{source} has no config.json: not a saved model folder")
            source = str(local)
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as error:
            raise JudgeError(f"cannot read the judge's config from {source}: {_first_line(error)}") from error
        if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise JudgeError(f"{source} holds a {config.model_type!r} model, not an image-text-to-text one")
        try:
            processor = AutoProcessor.from_pretrained(source)
            model, info = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, output_loading_info=True)
        except Exception as error:
            raise JudgeError(f"cannot load the judge from {source}: {_first_line(error)}{_hint(error)}") from error
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "chat_template", None) is None:
            raise JudgeError(
                f"the judge at {source} has no processor with a tokenizer and a chat template "
                f"(transformers read a {type(processor).__name__})"
            )
        # transformers fills missing or misshapen weights with random ones and only warns; a judge must be what
        # was saved (weights the model does not use, "unexpected keys", are dropped harmlessly)
        for kind in ("missing_keys", "mismatched_keys"):
            if keys := sorted(info.get(kind) or [], key=str):
                raise JudgeError(
                    f"the judge at {source} does not match its config: {kind.replace('_', ' ')} {keys[:3]}"
                )
        model = model.to(device).eval()
        # the loaded weights are views into the file at odd offsets; fresh aligned copies make the kernels take
        # the same paths as for the saved model, so a loaded judge answers bit for bit as the one saved
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
        return cls(model, processor, max_batch=max_batch)

    def save(self, path: str | Path) -> Path:
        """model.safetensors (+ config, generation config) and the processor (tokenizer, chat template)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.processor.save_pretrained(path)
        return path

    # -- answering

    def complete(self, turns: Sequence[Turn], max_tokens: int) -> list[Completion]:
        if max_tokens < 1:
            raise JudgeError(f"max_tokens must be at least 1, not {max_tokens}")
        answers: list[Completion | None] = [None] * len(turns)
        # turns with and without an image go in separate forwards: a text-only turn never pays for vision
        for with_image in (True, False):
            order = [i for i, turn in enumerate(turns) if (turn.image is not None) == with_image]
            for start in range(0, len(order), self.max_batch):
                chunk = order[start : start + self.max_batch]
                for i, answer in zip(chunk, self._generate([turns[i] for i in chunk], max_tokens), strict=True):
                    answers[i] = answer
        return answers  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate(self, turns: Sequence[Turn], max_tokens: int) -> list[Completion]:
        from transformers import GenerationConfig

        inputs = self.prompt_inputs(turns)
        T = inputs["input_ids"].shape[1]
        # a config of our own: the checkpoint's sampling defaults (temperature, repetition penalty) do not apply
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_tokens,
            eos_token_id=self.end_ids,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        out = self.model.generate(**inputs, generation_config=config)
        first = torch.log_softmax(out.logits[0].float(), dim=-1)  # [B, V] raw logits of the first answer step
        top = first.topk(min(TOP_LOGPROBS, first.shape[-1]), dim=-1)
        texts = self.tokenizer.batch_decode(out.sequences[:, T:], skip_special_tokens=True)  # [B, new]
        answers = []
        for text, values, ids in zip(texts, top.values.tolist(), top.indices.tolist(), strict=True):
            candidates: dict[str, float] = {}
            for lp, token_id in zip(values, ids, strict=True):
                token = self.tokenizer.decode([token_id])
                # two ids that read the same (rare) are one candidate: their probabilities add
                candidates[token] = _logaddexp(candidates[token], lp) if token in candidates else lp
            answers.append(Completion(text=text.strip(), first_logprobs=candidates))
        return answers

    def prompt_text(self, turn: Turn) -> str:
        """The chat template's text for one user turn, ready for the assistant's answer."""
        return self.processor.apply_chat_template(_messages(turn), add_generation_prompt=True, tokenize=False)

    def prompt_inputs(self, turns: Sequence[Turn]) -> dict[str, torch.Tensor]:
        """The model inputs of a batch of prompts, left-padded (the answers start at the same column)."""
        self.tokenizer.padding_side = "left"
        return self._process(turns, [self.prompt_text(t) for t in turns])

    def _process(self, turns: Sequence[Turn], texts: list[str]) -> dict[str, torch.Tensor]:
        images = [turn.image.convert("RGB") for turn in turns if turn.image is not None]
        try:
            inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        except Exception as error:
            raise JudgeError(f"the judge's processor cannot read the turns: {_first_line(error)}") from error
        device, dtype = self.model.device, self.model.dtype
        return {
            key: value.to(device, dtype=dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
            if isinstance(value, torch.Tensor)
        }

    # -- training

    def training_batch(self, turns: Sequence[Turn], answers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Teacher-forced inputs: each prompt as `complete` builds it, then its answer and the end-of-turn token,
        right-padded; `labels` are IGNORE except on the answer and end-of-turn tokens, so `model(**batch).loss`
        is the answers' cross-entropy. The prompt tokens are exactly those `complete` feeds the model."""
        if len(answers) != len(turns):
            raise JudgeError(f"{len(answers)} answers for {len(turns)} turns")
        if not turns:
            raise JudgeError("training_batch needs at least one turn")
        self.tokenizer.padding_side = "right"
        prompts = [self.prompt_text(t) for t in turns]
        inputs = self._process(turns, prompts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()  # [B, T]
        per_token = [key for key, value in inputs.items() if value.shape == ids.shape and key != "attention_mask"]
        rows: list[dict[str, list[int]]] = []
        for b, (turn, prompt, answer) in enumerate(zip(turns, prompts, answers, strict=True)):
            answer_ids = self._answer_ids(turn, prompt, answer)
            row = {key: inputs[key][b][mask[b]].tolist() + [0] * len(answer_ids) for key in per_token}
            row["input_ids"] = ids[b][mask[b]].tolist() + answer_ids
            scored = answer_ids[: _through_end(answer_ids, self.end_ids)]
            row["labels"] = [IGNORE] * int(mask[b].sum()) + scored + [IGNORE] * (len(answer_ids) - len(scored))
            rows.append(row)
        T = max(len(row["input_ids"]) for row in rows)
        fill = {"input_ids": self.pad_id, "labels": IGNORE}
        batch = {key: value for key, value in inputs.items() if key not in per_token and key != "attention_mask"}
        for key in [*per_token, "labels"]:
            padded = [row[key] + [fill.get(key, 0)] * (T - len(row[key])) for row in rows]
            batch[key] = torch.tensor(padded, dtype=torch.long, device=ids.device)  # [B, T]
        lengths = torch.tensor([len(row["input_ids"]) for row in rows], device=ids.device)
        batch["attention_mask"] = (torch.arange(T, device=ids.device)[None] < lengths[:, None]).long()  # [B, T]
        return batch

    def _answer_ids(self, turn: Turn, prompt: str, answer: str) -> list[int]:
        """The answer's tokens as the chat template writes an assistant turn after the prompt (" yes</s>")."""
        messages = _messages(turn) + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        full = self.processor.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise JudgeError("the judge's chat template does not continue the generation prompt with the answer")
        answer_ids = self.tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        if not any(token in self.end_ids for token in answer_ids):
            answer_ids = answer_ids + [self.end_ids[0]]  # a template that leaves the turn open
        return answer_ids


def _messages(turn: Turn) -> list[dict]:
    content = ([{"type": "image"}] if turn.image is not None else []) + [{"type": "text", "text": turn.text}]
    return [{"role": "user", "content": content}]


def _end_of_turn_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the generation config's eos ids, then the tokenizer's eos."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise JudgeError("the judge has no end-of-turn token (no eos_token_id in its tokenizer or generation config)")
    return ids


def _through_end(ids: list[int], end_ids: list[int]) -> int:
    """How many of the answer's tokens are scored: up to and including the first end-of-turn token."""
    for i, token in enumerate(ids):
        if token in end_ids:
            return i + 1
    return len(ids)


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def _looks_like_hub_id(text: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith(".")


def _hint(error: BaseException) -> str:
    """What to do when transformers could not build a processor for want of torchvision (Qwen2-VL's)."""
    from transformers.utils import is_torchvision_available

    if "video processor" not in str(error).lower() or is_torchvision_available():
        return ""
    return "; transformers builds no video processor without torchvision, and this processor needs one"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


# -- building a judge from scratch ---------------------------------------------------------------------------

# A word-level split that keeps every character: a word or one punctuation mark, each with the space before
# it; other whitespace alone; digits one by one (so any number is spelled). Decoding joins the pieces back.
_PIECES = r" ?\w+| ?[^\w\s]|\s"
LLAVA_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
ANSWER_WORDS = ("yes", "no", "none", "nothing", "(", ")", ",", ".", ";", *"0123456789")
LLAVA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER:{% else %} ASSISTANT:{% endif %}"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %} <image>{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def prompt_words() -> list[str]:
    """Every word and punctuation mark of our question texts (thinkdraw.judges.prompts), without the request."""
    query = Query(prompt="", plan="", progress=0.5)
    texts = [turn_for(query, ask, "").text for ask in ASKS]
    return sorted({piece for text in texts for piece in re.findall(r"\w+|[^\w\s]", text)})


def word_tokenizer(words: Sequence[str], special_tokens: Sequence[str], **roles: str):
    """A word-level PreTrainedTokenizerFast whose vocabulary is the special tokens, then every word and
    punctuation mark of `words` (split as the tokenizer splits text), bare and after a space, then the digits.
    Decoding gives back the text exactly (unknown words become the unk token). `roles` names the special
    tokens' roles: bos_token="<s>", unk_token="<unk>", ..."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if "unk_token" not in roles:
        raise JudgeError("a word tokenizer needs an unk_token for the words outside its vocabulary")
    digits = [str(d) for d in range(10)]
    pieces = {
        part.strip()
        for word in words
        for piece in re.findall(_PIECES, word)
        for part in re.findall(r"\d|\D+", piece)  # "x0" is read as "x", "0"
    }
    vocab = list(dict.fromkeys([*special_tokens, " ", "\n", *digits]))
    for piece in sorted(pieces - set(digits) - {""}):
        vocab += [piece, " " + piece]
    tokenizer = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token=roles["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(special_tokens))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **roles)


def new_llava_judge(
    words: Sequence[str] = (),
    image_size: int = 64,
    patch: int = 8,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    vision_hidden: int = 32,
    vision_layers: int = 2,
) -> VLMChat:
    """An untrained LLaVA judge: a CLIP vision tower (image_size px, patch px patches, vision_hidden wide) and a
    Llama (hidden wide, layers deep) over a word tokenizer of our questions, their answers and `words` (the
    words of the requests it will read, say). Seeded: the same arguments give the same weights."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    if image_size % patch:
        raise JudgeError(f"image_size {image_size} is not a multiple of the patch size {patch}")
    roles = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    tokenizer = word_tokenizer(
        [*prompt_words(), *ANSWER_WORDS, "USER", "ASSISTANT", ":", *words], LLAVA_SPECIALS, **roles
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in LLAVA_SPECIALS}
    num_image_tokens = (image_size // patch) ** 2  # the CLS token is dropped ("default" feature selection)
    vision = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch,
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 16),
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        num_key_value_heads=max(1, hidden // 16),
        max_position_embeddings=1024,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        image_seq_length=num_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,  # the last layer, so every vision layer is trained
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.bos_token_id = ids["<s>"]
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=LLAVA_TEMPLATE,
    )
    return VLMChat(model, processor)
