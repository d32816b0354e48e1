"""T2I-CompBench's scoring as its official code scores (Karine-Huang/T2I-CompBench), on transformers and any Detector.

Layout (the official one): one folder per category, its images named by prompt and a running index,
    DIR/samples/{prompt}_{index:06d}.png       ("a green bench and a blue bowl_000000.png")
and the index is the image's question_id. Per category (the official metric, file and rule):
    color, shape, texture  BLIP-VQA (BLIPvqa_eval/BLIP_vqa.py): each of the prompt's first 8 noun phrases asked
                           as "{phrase}?", P(yes) of BLIP's answer decoder; the image's score is their product
    spatial                UniDet_eval/2D_spatial_eval.py's rule over a Detector: the prompt's two objects found,
                           0.25 x each one's score + half the soft position score; below 0.5 counts 0
    non_spatial            CLIPScore_eval/CLIP_similarity.py: CLIP ViT-B/32 cosine of image and prompt, unscaled
    complex                3_in_1_eval/3_in_1.py: the mean of BLIP-VQA, the spatial rule (complex prompts' object
                           extraction) and CLIP (adjectives removed), or of two of them for the prompts of
                           complex_val_spatial.txt (BLIP + spatial) and complex_val_action.txt (BLIP + CLIP)
    numeracy               UniDet_eval/numeracy_eval.py's count rule over a Detector
    3d_spatial             prompts shipped, not scored here (the official rule needs UniDet's depth expert)

The official code reads prompts with spaCy's en_core_web_sm (noun chunks, part-of-speech tags, tokens). Their
parses for every shipped prompt ship with the package (data/t2icompbench/parses.jsonl, made with spaCy 3.8 and
en_core_web_sm 3.8.0 by `spacy_parse`), so scoring the benchmark needs no spaCy; any other prompt is parsed by
spaCy when it is installed. The prompt files, new_objects.txt, complex_val_spatial.txt, complex_val_action.txt
and their MIT License.txt are copied unchanged from the official repository (examples/dataset).
Every known difference from the official scorer: docs/benchmarks_differences.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from PIL import Image

from thinkdraw.errors import BenchmarkError, DetectorError, EvalFolderError, MetadataError
from thinkdraw.evaluator.detection import Detection, Detector
from thinkdraw.evaluator.geneval import load_image

T2I_DATA = Path(__file__).resolve().parent / "data" / "t2icompbench"
CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy", "3d_spatial")
SCORED = CATEGORIES[:-1]  # 3d_spatial needs UniDet's depth expert
USES = {  # the models each category asks
    "color": ("blip",),
    "shape": ("blip",),
    "texture": ("blip",),
    "spatial": ("detector",),
    "non_spatial": ("clip",),
    "complex": ("blip", "detector", "clip"),
    "numeracy": ("detector",),
}

# BLIP-VQA (BLIP_vqa.py, BLIP/configs/vqa.yaml, models/blip_vqa.py, data/utils.py)
NOUN_PHRASES = 8  # --np_num
SKIPPED_PHRASES = ("top", "the side", "the left", "the right")
BLIP_IMAGE_SIZE = 480  # vqa.yaml image_size: transforms.Resize((480, 480), bicubic)
BLIP_MAX_QUESTION = 35  # the question tokenizer's max_length
# UniDet (2D_spatial_eval.py, numeracy_eval.py, experts/model_bank.py)
DETECTION_THRESHOLD = 0.5  # --confidence-threshold: detectron2 keeps scores > 0.5
UNIDET_SIZE = (479, 480)  # transforms.Resize(size=479, max_size=480): the frame the boxes are measured in
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150  # pixels, in UniDet's frame
SPATIAL_WORDS = (  # vocab_spatial, in the official order: the first found in the prompt is its relation
    "on side of",
    "next to",
    "near",
    "on the left of",
    "on the right of",
    "on the bottom of",
    "on the top of",
    "on top of",
)
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
PERSON = ("girl", "boy", "man", "woman")
NUMBER_WORDS = ("a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight")
W2N = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}  # w2n.word_to_num
NUMERACY_ALIASES = {"ship": "boat", "telivision": "tv", "goldfish": "fish", "painting": "picture"}


# -- the shipped prompts -----------------------------------------------------------------------------------------


def check_category(category: str, scored: bool = True) -> str:
    choices = SCORED if scored else CATEGORIES
    if category not in choices:
        extra = " (3d_spatial is not scored: it needs UniDet's depth expert)" if category == "3d_spatial" else ""
        raise BenchmarkError(f"unknown T2I-CompBench category {category!r}{extra}; choose one of {', '.join(choices)}")
    return category


def t2icompbench_prompts(category: str) -> list[str]:
    """The category's 300 validation prompts ({category}_val.txt), stripped, in the official order."""
    return read_prompt_file(prompt_file(category))


def prompt_file(category: str) -> Path:
    """The shipped file of the category's validation prompts."""
    check_category(category, scored=False)
    return T2I_DATA / f"{category}_val.txt"


def read_prompt_file(path: Path) -> list[str]:
    """A prompt file as the official generation script (GORS_finetune/inference_eval.py) reads one: a prompt a
    line, the text before a tab; here stripped, blank lines skipped. MetadataError when there is none."""
    if not path.is_file():
        raise MetadataError(f"{path}: no such file")
    prompts = [line.split("\t")[0].strip() for line in path.read_text().splitlines()]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise MetadataError(f"{path}: no prompts (expected one a line)")
    return prompts


@cache
def _objects() -> tuple[list[str], list[str]]:
    """new_objects.txt's singular and plural names ("knife - knives"), lower-cased as the official code does."""
    pairs = [line.split(" - ") for line in (T2I_DATA / "new_objects.txt").read_text().splitlines() if line.strip()]
    return [s.strip().lower() for s, _ in pairs], [p.strip().lower() for _, p in pairs]


@cache
def _complex_subsets() -> tuple[frozenset[str], frozenset[str]]:
    """3_in_1.py's two lists, keyed as it keys them: the text before the first '.', lower-cased."""
    key = lambda name: frozenset(line.split(".")[0].lower() for line in (T2I_DATA / name).read_text().splitlines())  # noqa: E731
    return key("complex_val_spatial.txt"), key("complex_val_action.txt")


# -- prompts as spaCy reads them ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    text: str
    pos: str  # spaCy's coarse tag: NOUN, PROPN, ADJ, ...
    space: str = ""  # the whitespace after it (spaCy's whitespace_)


@dataclass(frozen=True)
class Parse:
    tokens: tuple[Token, ...]
    noun_chunks: tuple[str, ...]

    def span(self, start: int, stop: int) -> str:
        """spaCy's doc[start:stop].text: the tokens with the spaces between them (the stop clamped)."""
        tokens = self.tokens[start:stop]
        return "".join(t.text + t.space for t in tokens[:-1]) + (tokens[-1].text if tokens else "")


def _tokens_of(prompt: str, tagged: Sequence[str]) -> tuple[Token, ...]:
    """ "text/POS" entries back to tokens, each one's trailing space read off the prompt."""
    tokens, at = [], 0
    for entry in tagged:
        text, pos = entry.rsplit("/", 1)
        if not prompt.startswith(text, at):
            raise BenchmarkError(f"the shipped parse of {prompt!r} does not spell the prompt at {text!r}")
        at += len(text)
        space = " " if prompt.startswith(" ", at) else ""
        at += len(space)
        tokens.append(Token(text, pos, space))
    return tuple(tokens)


@cache
def shipped_parses() -> dict[str, Parse]:
    parses = {}
    for line in (T2I_DATA / "parses.jsonl").read_text().splitlines():
        row = json.loads(line)
        parses[row["prompt"]] = Parse(_tokens_of(row["prompt"], row["tokens"]), tuple(row["noun_chunks"]))
    return parses


def spacy_parse(prompts: Sequence[str], model: str = "en_core_web_sm") -> dict[str, Parse]:
    """The prompts through spaCy, as the official scripts read them (how parses.jsonl was made)."""
    try:
        import spacy

        nlp = spacy.load(model)
    except (ImportError, OSError) as error:
        raise BenchmarkError(
            f"spaCy with {model} is needed to read prompts that T2I-CompBench does not ship ({_first_line(error)})"
        ) from error
    parsed = {}
    for prompt in prompts:
        doc = nlp(prompt)
        tokens = tuple(Token(t.text, t.pos_, t.whitespace_) for t in doc)
        parsed[prompt] = Parse(tokens, tuple(chunk.text for chunk in doc.noun_chunks))
    return parsed


def parse_prompt(prompt: str) -> Parse:
    """The shipped parse of a benchmark prompt; spaCy's for any other."""
    found = shipped_parses().get(prompt)
    return found if found is not None else spacy_parse([prompt])[prompt]


# -- BLIP-VQA: the questions and their product -------------------------------------------------------------------


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's data/utils.py pre_question: lower case, .!"()*#:;~ removed, trailing spaces cut, 50 words at most."""
    question = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def blip_questions(parse: Parse) -> list[str]:
    """BLIP_vqa.py's questions: the noun chunks but 'top', 'the side', 'the left', 'the right', the first 8, each
    as "{chunk}?", through pre_question. A prompt with fewer chunks asks fewer (the official rest count 1)."""
    phrases = [chunk for chunk in parse.noun_chunks if chunk not in SKIPPED_PHRASES]
    return [pre_question(f"{phrase}?") for phrase in phrases[:NOUN_PHRASES]]


def blip_score(p_yes: Sequence[float]) -> float:
    """The product of the answers, each as the official vqa_prob writes it ('{:.4f}'), the product too."""
    product = 1.0
    for p in p_yes:
        product *= round(float(p), 4)
    return round(product, 4)


# -- the detector rules ------------------------------------------------------------------------------------------


def unidet_frame(width: int, height: int, size: tuple[int, int] = UNIDET_SIZE) -> tuple[int, int]:
    """The image size UniDet saw: torchvision Resize(size=479, max_size=480) of the short side (the official
    boxes, and so the 150-pixel distance rule, are in this frame)."""
    short, long = min(width, height), max(width, height)
    new_short, new_long = size[0], int(size[0] * long / short)
    if new_long > size[1]:
        new_short, new_long = int(size[1] * new_short / new_long), size[1]
    return (new_short, new_long) if width <= height else (new_long, new_short)


def unidet_detections(detections: Sequence[Detection], image_size: tuple[int, int]) -> list[Detection]:
    """What the official rules get from UniDet: detections scoring > 0.5, most confident first, boxes in
    UniDet's frame."""
    (w, h), (fw, fh) = image_size, unidet_frame(*image_size)
    sx, sy = fw / w, fh / h
    kept = [d for d in detections if d.score > DETECTION_THRESHOLD]
    kept.sort(key=lambda d: -d.score)  # detectron2 lists them by score; stable for ties
    return [Detection(d.label, (d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy), d.score) for d in kept]


def relation_of(prompt: str) -> str | None:
    """The first of vocab_spatial found in the prompt (a substring test, as the official code does)."""
    return next((word for word in SPATIAL_WORDS if word in prompt), None)


def spatial_objects(parse: Parse, complex_prompt: bool = False) -> tuple[str | None, str | None]:
    """2D_spatial_eval.py's two objects. Simple prompts: the first and the last NOUN. Complex prompts: around each
    preposition, the nearest NOUN (or PROPN) before it and the first NOUN after it (a PROPN followed by a
    non-PROPN when no NOUN follows); both only when exactly two are found."""
    tokens = parse.tokens
    if not complex_prompt:
        nouns = [t.text for t in tokens if t.pos == "NOUN"]
        if not nouns:
            raise BenchmarkError(f"the prompt {parse.span(0, len(tokens))!r} has no noun for the spatial rule")
        return _person(nouns[0]), _person(nouns[-1])
    n, found = len(tokens), []
    for i in range(n):
        k = next((k for k in (3, 2, 1) if parse.span(i, i + k) in COMPLEX_PREPOSITIONS), None)
        if k is None:
            continue
        before = next((tokens[j].text for j in range(i - 1, -1, -1) if tokens[j].pos in ("NOUN", "PROPN")), None)
        if before is not None:
            found.append(before)
        after = next((tokens[j].text for j in range(i + k, n) if tokens[j].pos == "NOUN"), None)
        if after is not None:
            found.append(after)
        elif i + k < n:  # the official fallback runs only when the NOUN scan reached the last token
            found += [
                tokens[j].text for j in range(i + k, n - 1) if tokens[j].pos == "PROPN" and tokens[j + 1].pos != "PROPN"
            ][:1]
    if len(found) != 2:
        return None, None
    return _person(found[0]), _person(found[1])


def _person(word: str) -> str:
    return "person" if word in PERSON else word


def position_score(relation: str | None, box1: Sequence[float], box2: Sequence[float]) -> float:
    """determine_position: a soft score that box1 stands in `relation` to box2 (y grows downward). Side
    relations: 1 when the centres are less than 150 px apart on either axis, else 150 / the larger distance.
    left/right/top/bottom: the dominant axis and direction must match, then 1 if IoU < 0.1, else 0.1 / IoU.
    'on top of' (not 'on the top of') has no branch there, so it scores 0, as officially."""
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    x_overlap = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0]))
    y_overlap = max(0.0, min(box1[3], box2[3]) - max(box1[1], box2[1]))
    inter = x_overlap * y_overlap
    union = (box1[2] - box1[0]) * (box1[3] - box1[1]) + (box2[2] - box2[0]) * (box2[3] - box2[1]) - inter
    iou = inter / union if union > 0 else 0.0  # the official code divides by zero here
    if relation in ("next to", "on side of", "near"):
        if abs(dx) < DISTANCE_THRESHOLD or abs(dy) < DISTANCE_THRESHOLD:
            return 1.0
        return DISTANCE_THRESHOLD / max(abs(dx), abs(dy))
    axis = {"on the right of": (-dx, dy), "on the left of": (dx, dy), "on the bottom of": (-dy, dx)}
    axis["on the top of"] = (dy, dx)
    if relation not in axis:
        return 0.0
    along, across = axis[relation]
    if along > 0 and abs(along) > abs(across):
        return 1.0 if iou < IOU_THRESHOLD else IOU_THRESHOLD / iou
    return 0.0


@dataclass(frozen=True)
class RuleScore:
    score: float
    details: dict = field(default_factory=dict)


def spatial_score(
    prompt: str, parse: Parse, detections: Sequence[Detection], image_size: tuple[int, int], complex_prompt=False
) -> RuleScore:
    """2D_spatial_eval.py on one image: each object is the most confident detection of its name."""
    dets = unidet_detections(detections, image_size)
    labels = [d.label for d in dets]
    relation = relation_of(prompt)
    obj1, obj2 = spatial_objects(parse, complex_prompt)
    details = {"objects": [obj1, obj2], "relation": relation, "found": labels}
    if obj1 in labels and obj2 in labels:
        d1, d2 = dets[labels.index(obj1)], dets[labels.index(obj2)]
        position = position_score(relation, d1.box, d2.box)
        score = 0.25 * d1.score + 0.25 * d2.score + position / 2
        details["position"] = position
    elif obj1 in labels:
        score = 0.25 * dets[labels.index(obj1)].score
    elif obj2 in labels:
        score = 0.25 * dets[labels.index(obj2)].score
    else:
        score = 0.0
    return RuleScore(0.0 if score < 0.5 else score, details)


def numeracy_targets(parse: Parse) -> tuple[list[str], list[int]]:
    """numeracy_eval.py's objects and counts: a number word ("a" .. "eight") before a one- or two-word name of
    new_objects.txt, singular or plural. The two lists are built as the official code builds them."""
    singular, plural = _objects()
    words = [t.text for t in parse.tokens]
    objects: list[str] = []
    counts: list[int] = []

    def count(word: str) -> None:
        if word in W2N:  # w2n fails on "a" / "an" and the official code passes
            counts.append(W2N[word])

    for i, word in enumerate(words):
        if word not in NUMBER_WORDS or i + 1 >= len(words):  # a number last: the official code fails
            continue
        pair = f"{words[i + 1]} {words[i + 2]}" if i < len(words) - 2 else None
        if pair is not None and (pair in singular or pair in plural):
            if pair in plural and word not in ("a", "an", "one"):
                objects.append(singular[plural.index(pair)])
                count(word)
            else:
                counts.append(1)
                objects.append(pair)
        elif words[i + 1] in singular or words[i + 1] in plural:
            if words[i + 1] in singular and word in ("a", "an", "one"):
                counts.append(1)
                objects.append(words[i + 1])
            elif words[i + 1] in plural:
                objects.append(singular[plural.index(words[i + 1])])
                count(word)
            else:
                raise BenchmarkError(f"{parse.span(0, len(words))!r}: {word!r} before the singular {words[i + 1]!r}")
    prompt = parse.span(0, len(words))
    if not objects:
        raise BenchmarkError(f"the numeracy rule reads no countable objects in {prompt!r}")
    if len(counts) != len(objects):  # "a" / "an" before a plural: the official lists fall out of step
        raise BenchmarkError(f"the numeracy rule cannot pair the objects and numbers of {prompt!r}")
    return objects, counts


def same_box(box1: Sequence[float], box2: Sequence[float]) -> bool:
    """numeracy_eval.py's calculate_iou (inclusive pixel areas): IoU > 0.9, or either box 90% inside the other."""
    inter = max(0.0, min(box1[2], box2[2]) - max(box1[0], box2[0]) + 1) * max(
        0.0, min(box1[3], box2[3]) - max(box1[1], box2[1]) + 1
    )
    area1 = (box1[2] - box1[0] + 1) * (box1[3] - box1[1] + 1)
    area2 = (box2[2] - box2[0] + 1) * (box2[3] - box2[1] + 1)
    return inter / (area1 + area2 - inter) > 0.9 or inter / area1 > 0.9 or inter / area2 > 0.9


def numeracy_score(parse: Parse, detections: Sequence[Detection], image_size: tuple[int, int]) -> RuleScore:
    """numeracy_eval.py on one image: duplicates (same name, same_box) merged, most confident first; per object
    of the prompt, half its weight when found, the other half when found exactly as many times as asked. A name
    not found verbatim takes over every detected label containing it (the official substring rule)."""
    objects, counts = numeracy_targets(parse)
    labels: list[str] = []
    boxes: list[tuple[float, ...]] = []
    for d in unidet_detections(detections, image_size):
        if not any(label == d.label and same_box(d.box, box) for label, box in zip(labels, boxes, strict=True)):
            labels.append(d.label)
            boxes.append(d.box)
    weight, score = 1.0 / len(objects), 0.0
    found = {}
    for name, wanted in zip(objects, counts, strict=True):
        name = _person(NUMERACY_ALIASES.get(name, name))
        if name not in labels:
            labels = [name if name in label else label for label in labels]
        if name in labels:
            score += 0.5 * weight
            if labels.count(name) == wanted:
                score += 0.5 * weight
        found[name] = [wanted, labels.count(name)]
    return RuleScore(score, {"counts": found})


# -- CLIP and 3-in-1 ---------------------------------------------------------------------------------------------


def clip_text(prompt: str, parse: Parse | None, complex_prompt: bool = False) -> str:
    """CLIP_similarity.py's text: the prompt; for complex prompts its tokens but the ADJ ones, joined by spaces."""
    if not complex_prompt:
        return prompt
    return " ".join(t.text for t in parse.tokens if t.pos != "ADJ")


def three_in_one(prompt: str, blip: float, spatial: float, clip: float) -> float:
    """3_in_1.py: BLIP + spatial halves for complex_val_spatial prompts, BLIP + CLIP for complex_val_action ones,
    the mean of all three for the rest."""
    spatial_prompts, action_prompts = _complex_subsets()
    key = prompt.split(".")[0].lower()
    if key in spatial_prompts:
        return (spatial + blip) * 0.5
    if key in action_prompts:
        return (clip + blip) * 0.5
    return (blip + spatial + clip) / 3


# -- the folder --------------------------------------------------------------------------------------------------

SAMPLES = "samples"
_NAME = re.compile(r"^(?P<prompt>.+)_(?P<index>\d+)$")


@dataclass(frozen=True)
class SampleImage:
    path: Path
    prompt: str
    question_id: int  # the index after the last "_" (the official question_id)


def sample_path(folder: Path, prompt: str, index: int) -> Path:
    """Where image `index` (its question_id) of a prompt lies, as the official generation script names it:
    FOLDER/samples/{prompt}_{index:06d}.png, the index running over every image of the folder."""
    return folder / SAMPLES / f"{prompt}_{index:06d}.png"


def sample_of(path: Path) -> SampleImage | None:
    """The image's prompt and question_id as its name gives them; None for a name of another form."""
    match = _NAME.match(path.stem)
    return None if match is None else SampleImage(path, match["prompt"], int(match["index"]))


def read_samples(folder: Path, category: str, partial: bool = False) -> list[SampleImage]:
    """The images of FOLDER/samples, by question_id. Every name must be "{prompt}_{index}.png" with a prompt of
    the category; a category prompt without an image is an error unless `partial`."""
    check_category(category)
    samples_dir = folder / SAMPLES
    layout = f"T2I-CompBench's layout is {folder}/samples/{{prompt}}_{{index:06d}}.png"
    if not folder.is_dir():
        raise EvalFolderError(f"{folder}: no such folder")
    if not samples_dir.is_dir():
        raise EvalFolderError(f"{samples_dir}: missing ({layout})")
    paths = sorted(samples_dir.glob("*.png"))
    if not paths:
        raise EvalFolderError(f"{samples_dir}: no PNG images ({layout})")
    prompts = t2icompbench_prompts(category)
    known = set(prompts)
    samples = []
    for path in paths:
        sample = sample_of(path)
        if sample is None:
            raise EvalFolderError(f"{path}: not named {{prompt}}_{{index}}.png ({layout})")
        if sample.prompt not in known:
            raise EvalFolderError(f"{path}: {sample.prompt!r} is not a T2I-CompBench {category} prompt")
        samples.append(sample)
    missing = [p for p in prompts if p not in {s.prompt for s in samples}]
    if missing and not partial:
        raise EvalFolderError(
            f"{samples_dir}: {len(missing)} of the {len(prompts)} {category} prompts have no image "
            f"(the first: {missing[0]!r}); --partial scores the others"
        )
    return sorted(samples, key=lambda s: (s.question_id, s.path.name))


# -- the models --------------------------------------------------------------------------------------------------


class BlipVQA:
    """BLIP's vqa_prob (T2I-CompBench models/blip_vqa.py) on a transformers BlipForQuestionAnswering.

    The question's first token is BLIP's [ENC] (the original code sets input_ids[:, 0] = enc_token_id; the
    transformers model would keep [CLS]); the answer decoder starts from [DEC] and P(yes) is its first-token
    probability of "yes" over "yes" + "no". Images: Resize((480, 480), bicubic), the processor's mean and std
    (OpenAI CLIP's, as the official Normalize), position embeddings interpolated when the checkpoint has another
    size (as BLIP's own loader does)."""

    def __init__(self, model, processor, device: str = "cpu", image_size: int | None = BLIP_IMAGE_SIZE):
        self.model, self.processor, self.device = model, processor, device
        self.image_size = image_size or int(model.config.vision_config.image_size)
        tokenizer = processor.tokenizer
        self.yes_id, self.no_id = (_word_id(tokenizer, word) for word in ("yes", "no"))
        self.start_id = int(model.config.text_config.bos_token_id)  # [DEC], 30522 (the official hard-coded id)
        self.enc_id = _enc_id(tokenizer, self.start_id, int(model.config.text_config.vocab_size))

    @classmethod
    def load(cls, source: str, device: str = "cpu", image_size: int | None = BLIP_IMAGE_SIZE) -> BlipVQA:
        import torch
        from transformers import BlipForQuestionAnswering, BlipProcessor

        from thinkdraw.evaluator.mask2former import _check_loading, _check_model_type, _resolve

        what = "BLIP-VQA model"
        source = _resolve(source, what)
        _check_model_type(source, "blip", what)
        try:
            processor = BlipProcessor.from_pretrained(source)
            model, info = BlipForQuestionAnswering.from_pretrained(
                source, dtype=torch.float32, output_loading_info=True
            )
        except Exception as error:
            raise DetectorError(f"cannot load the {what} from {source}: {_first_line(error)}") from error
        _check_loading(info, source, what)
        return cls(model.to(device).eval(), processor, device, image_size)

    def pixel_values(self, images: Sequence[Image.Image]):
        size = (self.image_size, self.image_size)
        views = [image.convert("RGB").resize(size, Image.Resampling.BICUBIC) for image in images]
        return self.processor.image_processor(images=views, do_resize=False, return_tensors="pt")["pixel_values"]

    def yes(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(yes) for each image's questions (the image encoded once for all of them).

        Questions go through the text towers in groups of one token length, unpadded: transformers 5.25's BLIP
        text decoder drops the question's padding mask in its cross-attention (BlipTextAttention passes it on
        as the self-attention mask), so a padded question would answer otherwise than alone; the original BLIP
        masks the padding, which is what equal lengths reproduce exactly."""
        import torch

        out: list[list[float]] = [[0.0] * len(qs) for qs in questions]
        asked = [(i, j, q) for i, qs in enumerate(questions) for j, q in enumerate(qs)]
        if not asked:
            return out
        model, tokenizer = self.model, self.processor.tokenizer
        with torch.inference_mode():
            pixels = self.pixel_values(images).to(self.device)  # [B, 3, S, S]
            resized = self.image_size != int(model.config.vision_config.image_size)
            image_embeds = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=resized).last_hidden_state
            ids = tokenizer([q for _, _, q in asked], truncation=True, max_length=BLIP_MAX_QUESTION).input_ids
            by_length: dict[int, list[int]] = {}
            for k, token_ids in enumerate(ids):
                by_length.setdefault(len(token_ids), []).append(k)
            for group in by_length.values():
                input_ids = torch.tensor([ids[k] for k in group], device=self.device)  # [G, T]
                input_ids[:, 0] = self.enc_id
                embeds = image_embeds[torch.tensor([asked[k][0] for k in group], device=self.device)]  # [G, N, D]
                question = model.text_encoder(input_ids=input_ids, encoder_hidden_states=embeds).last_hidden_state
                start = torch.full((len(group), 1), self.start_id, dtype=torch.long, device=self.device)
                logits = model.text_decoder(input_ids=start, encoder_hidden_states=question).logits[:, 0, :]  # [G, V]
                probs = logits.float().softmax(dim=-1)
                p_yes = (probs[:, self.yes_id] / (probs[:, self.yes_id] + probs[:, self.no_id])).tolist()
                for k, p in zip(group, p_yes, strict=True):
                    i, j, _ = asked[k]
                    out[i][j] = p
        return out


def _word_id(tokenizer, word: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([word])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise DetectorError(f"the BLIP-VQA tokenizer has no token {word!r}")
    return int(ids[0])


def _enc_id(tokenizer, start_id: int, vocab_size: int) -> int:
    """[ENC]: BLIP's init_tokenizer adds [DEC] then [ENC] to bert-base-uncased, so [ENC] = [DEC] + 1 (30523)
    when the tokenizer does not list it."""
    found = tokenizer.convert_tokens_to_ids(["[ENC]"])[0]
    if found is not None and found != tokenizer.unk_token_id:
        return int(found)
    if start_id + 1 >= vocab_size:
        raise DetectorError(f"the BLIP-VQA model has no [ENC] token (vocabulary {vocab_size}, [DEC] = {start_id})")
    return start_id + 1


class ClipSimilarity:
    """CLIP_similarity.py on a transformers CLIPModel (officially OpenAI's ViT-B/32): the cosine of the
    normalised image and text features, unscaled (no 100x, no 2.5 x max(cos, 0) of CLIPScore)."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model, processor, device
        self.size = int(model.config.vision_config.image_size)

    @classmethod
    def load(cls, source: str, device: str = "cpu") -> ClipSimilarity:
        from thinkdraw.evaluator.mask2former import ClipColors

        colors = ClipColors.load(source, device)  # the same CLIP loading and its checks
        return cls(colors.model, colors.processor, device)

    def similarity(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        import torch
        import torch.nn.functional as F

        from thinkdraw.evaluator.mask2former import clip_view

        with torch.inference_mode():
            # clip.load's preprocess: Resize(224, bicubic) of the short side, CenterCrop(224), then normalise
            views = [clip_view(image.convert("RGB"), self.size) for image in images]
            pixels = self.processor.image_processor(
                images=views, do_resize=False, do_center_crop=False, return_tensors="pt"
            )["pixel_values"].to(self.device)  # [B, 3, size, size]
            tokens = self.processor.tokenizer(
                list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt"
            ).to(self.device)
            image_features = F.normalize(self.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            text_features = F.normalize(self.model.get_text_features(**tokens).pooler_output, dim=-1)
            return (image_features * text_features).sum(dim=-1).float().tolist()  # [B]


# -- scoring a folder --------------------------------------------------------------------------------------------


def evaluate_samples(
    samples: Sequence[SampleImage],
    category: str,
    vqa: BlipVQA | None = None,
    clip: ClipSimilarity | None = None,
    detector: Detector | None = None,
    batch_size: int = 32,
    advance: Callable[[int], None] | None = None,
) -> list[dict]:
    """One result per image: the official question_id and answer (the image's score), with its parts."""
    check_category(category)
    needs = {"blip": vqa, "clip": clip, "detector": detector}
    for name in USES[category]:
        if needs[name] is None:
            raise BenchmarkError(f"the {category} category needs a {name} model")
    complex_prompt = category == "complex"
    results = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [load_image(s.path) for s in chunk]
        parses = [parse_prompt(s.prompt) if category != "non_spatial" else None for s in chunk]
        parts: list[dict] = [{} for _ in chunk]
        if "blip" in USES[category]:
            questions = [blip_questions(p) for p in parses]
            for part, qs, answers in zip(parts, questions, vqa.yes(images, questions), strict=True):
                part["blip"] = blip_score(answers)
                part["questions"] = [[q, round(a, 4)] for q, a in zip(qs, answers, strict=True)]
        if "clip" in USES[category]:
            texts = [clip_text(s.prompt, p, complex_prompt) for s, p in zip(chunk, parses, strict=True)]
            for part, value in zip(parts, clip.similarity(images, texts), strict=True):
                part["clip"] = value
        for sample, image, parse, part in zip(chunk, images, parses, parts, strict=True):
            if "detector" in USES[category]:
                detections = detector.detect(image)
                if category == "numeracy":
                    rule = numeracy_score(parse, detections, image.size)
                else:
                    rule = spatial_score(sample.prompt, parse, detections, image.size, complex_prompt)
                part["spatial" if category != "numeracy" else "numeracy"] = rule.score
                part.update(rule.details)
            score = _category_score(category, sample.prompt, part)
            results.append(
                {
                    "filename": str(sample.path),
                    "prompt": sample.prompt,
                    "category": category,
                    "question_id": sample.question_id,
                    "answer": score,
                    "details": part,
                }
            )
        if advance:
            advance(len(chunk))
    return results


def _category_score(category: str, prompt: str, part: dict) -> float:
    if category == "complex":
        return three_in_one(prompt, part["blip"], part["spatial"], part["clip"])
    return part[{"non_spatial": "clip", "spatial": "spatial", "numeracy": "numeracy"}.get(category, "blip")]


def mean_score(results: Sequence[dict]) -> float:
    """The official 'score avg': the mean answer over every image."""
    return math.fsum(r["answer"] for r in results) / len(results)


def write_results(results: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in results))


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
