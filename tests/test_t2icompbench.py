"""T2I-CompBench (thinkdraw.evaluator.t2icompbench) against the official code (Karine-Huang/T2I-CompBench):
the shipped prompts and their spaCy parses, BLIP_vqa.py's questions and product, 2D_spatial_eval.py's and
numeracy_eval.py's rules on hand-built detections, 3_in_1.py's combination, CLIP_similarity.py's cosine; tiny
random BLIP-VQA and CLIP models saved to folders and loaded back; the CLI and its one-line errors.

Expected numbers are worked out by hand from the official formulas (quoted in the module's docstrings).
"""

from __future__ import annotations

import json
import math
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_cli import assert_one_line_error, invoke
from test_mask2former import CLIP_SIZE, tiny_clip, tiny_clip_tokenizer, tiny_mask2former
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPImageProcessorPil,
    CLIPProcessor,
    Mask2FormerImageProcessorPil,
)
from transformers.utils import logging as hf_logging

from thinkdraw.errors import BenchmarkError, DetectorError, EvalFolderError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.mask2former import Mask2FormerDetector
from thinkdraw.evaluator.t2icompbench import (
    CATEGORIES,
    T2I_DATA,
    BlipVQA,
    ClipSimilarity,
    Parse,
    Token,
    blip_questions,
    blip_score,
    clip_text,
    evaluate_samples,
    mean_score,
    numeracy_score,
    numeracy_targets,
    parse_prompt,
    position_score,
    pre_question,
    read_samples,
    relation_of,
    same_box,
    shipped_parses,
    spacy_parse,
    spatial_objects,
    spatial_score,
    t2icompbench_prompts,
    three_in_one,
    unidet_frame,
)

BLIP_WORDS = ("yes", "no", "a", "the", "green", "blue", "bench", "bowl", "bird", "horse", "car", "?")
BLIP_SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def quiet_loading():
    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def det(label: str, box, score: float) -> Detection:
    return Detection(label, tuple(float(v) for v in box), score)


# -- the shipped benchmark -------------------------------------------------------------------------------------


def test_the_official_prompts_ship_with_their_license():
    for category in CATEGORIES:
        prompts = t2icompbench_prompts(category)
        assert len(prompts) == len(set(prompts)) == 300, category
    assert t2icompbench_prompts("color")[0] == "a green bench and a blue bowl"
    assert "MIT License" in (T2I_DATA / "License.txt").read_text()
    assert "Copyright (c) 2023 HKU" in (T2I_DATA / "License.txt").read_text()
    # the two 3-in-1 lists are the complex prompts they name; new_objects.txt has its 101 names
    complex_keys = {p.split(".")[0].lower() for p in t2icompbench_prompts("complex")}
    for name, n in (("complex_val_spatial.txt", 58), ("complex_val_action.txt", 212)):
        keys = [line.split(".")[0].lower() for line in (T2I_DATA / name).read_text().splitlines()]
        assert len(keys) == n and set(keys) <= complex_keys
    assert len((T2I_DATA / "new_objects.txt").read_text().splitlines()) == 101
    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["thinkdraw"]
    covered = {p for g in globs for p in (root / "thinkdraw").glob(g) if p.is_file()}
    assert set(T2I_DATA.iterdir()) <= covered


def test_every_parsed_prompt_has_its_spacy_parse():
    parses = shipped_parses()
    for category in ("color", "shape", "texture", "spatial", "complex", "numeracy"):
        for prompt in t2icompbench_prompts(category):
            parse = parses[prompt]
            assert parse.span(0, len(parse.tokens)) == prompt  # tokens and spaces spell the prompt
    parse = parse_prompt("The fluffy cat is on the left of the soft pillow.")
    assert [(t.text, t.pos) for t in parse.tokens[:3]] == [("The", "DET"), ("fluffy", "ADJ"), ("cat", "NOUN")]
    assert parse.span(4, 7) == "on the left" and parse.span(10, 99) == "pillow."


def test_spacy_reads_the_shipped_prompts_as_shipped():
    """parses.jsonl is spaCy's reading (3.8, en_core_web_sm 3.8.0); where spaCy and the model are installed,
    spacy_parse gives the same tokens, tags, spaces and noun chunks."""
    pytest.importorskip("spacy")
    prompts = [t2icompbench_prompts(c)[i] for c in ("color", "spatial", "complex", "numeracy") for i in (0, 150)]
    try:
        parsed = spacy_parse(prompts)
    except BenchmarkError:
        pytest.skip("en_core_web_sm is not installed")
    assert parsed == {p: shipped_parses()[p] for p in prompts}


def test_a_prompt_of_ones_own_needs_spacy(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if spaCy were not installed
    with pytest.raises(BenchmarkError) as err:
        parse_prompt("a purple giraffe and a yellow kite")
    assert str(err.value).startswith("spaCy with en_core_web_sm is needed to read prompts that T2I-CompBench does not")
    assert "\n" not in str(err.value)
    assert parse_prompt("a green bench and a blue bowl").noun_chunks == ("a green bench", "a blue bowl")  # shipped


# -- BLIP-VQA: the questions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, questions",
    [
        ("a green bench and a blue bowl", ["a green bench?", "a blue bowl?"]),
        ("a round pizza and a rectangular piece of lasagna", ["a round pizza?", "a rectangular piece?", "lasagna?"]),
        ("a metallic fork and a wooden desk", ["a metallic fork?", "a wooden desk?"]),
        # complex: lower-cased by pre_question; 'the left' and 'top' are not asked
        ("The fluffy cat is on the left of the soft pillow.", ["the fluffy cat?", "the soft pillow?"]),
        ("The red hat was on top of the brown coat rack.", ["the red hat?", "the brown coat rack?"]),
        (
            "The striped black and white cat lay next to the soft grey blanket.",
            ["the striped black and white cat?", "the soft grey blanket?"],
        ),
    ],
)
def test_blip_questions_of_real_prompts(prompt, questions):
    assert any(prompt in t2icompbench_prompts(c) for c in ("color", "shape", "texture", "complex"))
    assert blip_questions(parse_prompt(prompt)) == questions


def test_blip_asks_the_first_eight_noun_phrases():
    chunks = tuple(f"a thing {i}" for i in range(10)) + ("the side",)
    parse = Parse((Token("x", "NOUN"),), ("top",) + chunks)
    assert blip_questions(parse) == [f"a thing {i}?" for i in range(8)]
    assert pre_question('A Red (Apple)! "big"; #1:~*  ') == "a red apple big 1"
    assert pre_question(" ".join(["w"] * 60)) == " ".join(["w"] * 50)


def test_blip_score_is_the_product_of_four_decimal_answers():
    assert blip_score([0.5, 0.5]) == 0.25
    assert blip_score([0.9, 0.8, 0.5]) == 0.36
    assert blip_score([0.00004, 0.9]) == 0.0  # '{:.4f}' of 0.00004 is 0.0000
    assert blip_score([]) == 1.0  # no noun phrase: every official pass counts 1


# -- BLIP-VQA: the model -----------------------------------------------------------------------------------------


def tiny_blip_tokenizer(with_enc: bool = False) -> BertTokenizer:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_WORDS, "[DEC]"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, bos_token="[DEC]")
    if with_enc:
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def save_tiny_blip(path: Path, with_enc: bool = False, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = tiny_blip_tokenizer(with_enc)
    dec = tokenizer.convert_tokens_to_ids("[DEC]")
    text = dict(
        vocab_size=dec + 2,  # [DEC] then [ENC], as BLIP's init_tokenizer adds them
        hidden_size=32,
        encoder_hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=dec,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval().save_pretrained(path)
    size = {"height": BLIP_SIZE, "width": BLIP_SIZE}
    BlipProcessor(image_processor=BlipImageProcessorPil(size=size), tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip")
    tokenizer = tiny_clip_tokenizer()
    tiny_clip(tokenizer).save_pretrained(path)
    size = {"shortest_edge": CLIP_SIZE}
    processor = CLIPImageProcessorPil(size=size, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def manual_p_yes(vqa: BlipVQA, image: Image.Image, question: str, first_token: int, size: int) -> float:
    """vqa_prob written out on the model's parts: [first_token] question, [DEC] start, yes / (yes + no)."""
    model, tokenizer = vqa.model, vqa.processor.tokenizer
    view = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.tensor(np.asarray(view, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    processor = vqa.processor.image_processor
    mean, std = (torch.tensor(v)[:, None, None] for v in (processor.image_mean, processor.image_std))
    pixels = (pixels - mean) / std
    with torch.no_grad():
        embeds = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=size != 32).last_hidden_state
        ids = tokenizer([question], return_tensors="pt").input_ids
        ids[:, 0] = first_token
        q = model.text_encoder(input_ids=ids, encoder_hidden_states=embeds).last_hidden_state
        logits = model.text_decoder(input_ids=torch.tensor([[vqa.start_id]]), encoder_hidden_states=q).logits[0, 0]
    probs = logits.softmax(-1)
    return float(probs[vqa.yes_id] / (probs[vqa.yes_id] + probs[vqa.no_id]))


def test_blip_vqa_is_the_official_vqa_prob(blip_dir):
    vqa = BlipVQA.load(str(blip_dir), image_size=48)  # 48 px: the position embeddings are interpolated
    tokenizer = vqa.processor.tokenizer
    dec = tokenizer.convert_tokens_to_ids("[DEC]")
    assert (vqa.start_id, vqa.enc_id) == (dec, dec + 1)  # [ENC] = [DEC] + 1 when the tokenizer lacks it
    assert (vqa.yes_id, vqa.no_id) == tuple(tokenizer.convert_tokens_to_ids(["yes", "no"]))
    image = noise(40, 30, seed=1)
    [[p]] = vqa.yes([image], [["a green bench?"]])
    assert 0 < p < 1
    assert p == pytest.approx(manual_p_yes(vqa, image, "a green bench?", vqa.enc_id, 48), abs=1e-6)
    # the question starts with [ENC], not the [CLS] transformers would keep: a different answer
    assert abs(p - manual_p_yes(vqa, image, "a green bench?", tokenizer.cls_token_id, 48)) > 1e-6


def test_blip_vqa_pins_p_yes_by_the_answer_decoder(blip_dir):
    vqa = BlipVQA.load(str(blip_dir))
    decoder = vqa.model.text_decoder
    with torch.no_grad():  # "yes" and "no" logits become their biases: P(yes) = 3 / (3 + 1)
        decoder.bert.embeddings.word_embeddings.weight[[vqa.yes_id, vqa.no_id]] = 0
        decoder.cls.predictions.bias[[vqa.yes_id, vqa.no_id]] = torch.tensor([math.log(3), 0.0])
    answers = vqa.yes([noise(32, 32), noise(64, 20, seed=2)], [["a bird?", "the bowl?"], ["a car?"]])
    assert answers == [[pytest.approx(0.75, abs=1e-6)] * 2, [pytest.approx(0.75, abs=1e-6)]]


def test_blip_vqa_batches_like_single_questions(blip_dir):
    vqa = BlipVQA.load(str(blip_dir), image_size=None)  # None: the checkpoint's own 32
    assert vqa.image_size == 32
    images = [noise(32, 32, seed=3), noise(50, 40, seed=4)]
    together = vqa.yes(images, [["a green bench?", "the blue bowl on a car?"], ["a horse?"]])
    alone = [vqa.yes([images[0]], [[q]])[0][0] for q in ("a green bench?", "the blue bowl on a car?")]
    assert together[0] == pytest.approx(alone, abs=1e-5)
    assert together[1] == pytest.approx(vqa.yes([images[1]], [["a horse?"]])[0], abs=1e-5)
    assert vqa.yes(images, [[], []]) == [[], []]


def test_blip_vqa_uses_the_tokenizers_enc_when_it_has_one(tmp_path):
    vqa = BlipVQA.load(str(save_tiny_blip(tmp_path, with_enc=True)))
    assert vqa.enc_id == vqa.processor.tokenizer.convert_tokens_to_ids("[ENC]") == vqa.start_id + 1


def test_model_loading_errors_are_one_line(tmp_path, blip_dir, clip_dir, offline):
    with pytest.raises(DetectorError, match=f"^no BLIP-VQA model folder at {tmp_path / 'nope'}$"):
        BlipVQA.load(str(tmp_path / "nope"))
    with pytest.raises(DetectorError, match="holds a 'clip' model, not a 'blip' one"):
        BlipVQA.load(str(clip_dir))
    with pytest.raises(DetectorError, match="holds a 'blip' model, not a 'clip' one"):
        ClipSimilarity.load(str(blip_dir))
    with pytest.raises(DetectorError) as err:
        BlipVQA.load("nobody-here/no-such-blip")
    assert str(err.value).startswith("cannot read the BLIP-VQA model's config from nobody-here/no-such-blip: OSError")
    assert "\n" not in str(err.value)


# -- CLIP -------------------------------------------------------------------------------------------------------


def test_clip_similarity_is_the_plain_cosine(clip_dir):
    clip = ClipSimilarity.load(str(clip_dir))
    images = [noise(40, 30, seed=5), noise(32, 32, seed=6)]
    texts = ["a man is reading a book", "a dog"]
    values = clip.similarity(images, texts)
    with torch.no_grad():
        pixels = clip.processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = clip.processor.tokenizer(texts, padding=True, return_tensors="pt")
        a = F.normalize(clip.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        b = F.normalize(clip.model.get_text_features(**tokens).pooler_output, dim=-1)
    assert values == pytest.approx((a * b).sum(-1).tolist(), abs=1e-5)  # unscaled: no 100x, no 2.5 x
    assert all(-1 <= v <= 1 for v in values)


def test_clip_text_drops_adjectives_of_complex_prompts():
    prompt = "The striped black and white cat lay next to the soft grey blanket."
    assert clip_text(prompt, parse_prompt(prompt)) == prompt
    assert clip_text(prompt, parse_prompt(prompt), complex_prompt=True) == "The and cat lay next to the blanket ."


# -- the spatial rule --------------------------------------------------------------------------------------------


def test_unidet_frame_is_torchvisions_resize():
    assert unidet_frame(512, 512) == (479, 479)
    assert unidet_frame(1024, 512) == (480, 240)  # 958 > 480: the long side capped
    assert unidet_frame(300, 400) == (360, 480)  # 638 > 480: int(480 * 479 / 638)


def test_objects_and_relations_of_real_prompts():
    assert relation_of("a horse on the left of a car") == "on the left of"
    assert relation_of("a airplane on the top of a horse") == "on the top of"  # before 'on top of'
    assert spatial_objects(parse_prompt("a airplane on the top of a horse")) == ("airplane", "horse")  # 'top' between
    assert spatial_objects(parse_prompt("a girl on the top of a frog")) == ("person", "frog")
    fluffy = parse_prompt("The fluffy cat is on the left of the soft pillow.")
    assert spatial_objects(fluffy, complex_prompt=True) == ("cat", "pillow")
    # the first NOUN after the preposition: "coat" of "coat rack"
    assert spatial_objects(parse_prompt("The red hat was on top of the brown coat rack."), True) == ("hat", "coat")
    # a complex prompt without a preposition of the list has no pair
    assert spatial_objects(parse_prompt("The leather wallet was inside the brown purse."), True) == (None, None)


def test_position_score_by_hand():
    left, right = (0, 0, 100, 100), (300, 0, 400, 100)
    assert position_score("on the left of", left, right) == 1.0
    assert position_score("on the right of", left, right) == 0.0
    assert position_score("on the right of", right, left) == 1.0
    assert position_score("on the top of", (0, 0, 100, 100), (0, 300, 100, 400)) == 1.0  # y grows downward
    assert position_score("on the bottom of", (0, 300, 100, 400), (0, 0, 100, 100)) == 1.0
    assert position_score("on top of", (0, 0, 100, 100), (0, 300, 100, 400)) == 0.0  # no official branch
    # overlapping: IoU 1/3 >= 0.1 gives 0.1 / IoU
    assert position_score("on the left of", (0, 0, 200, 200), (100, 0, 300, 200)) == pytest.approx(0.3)
    # the dominant axis must be the relation's
    assert position_score("on the left of", (0, 0, 10, 10), (50, 100, 60, 110)) == 0.0
    assert position_score("next to", (0, 0, 10, 10), (100, 400, 110, 410)) == 1.0  # |dx| = 100 < 150
    assert position_score("next to", (0, 0, 10, 10), (300, 400, 310, 410)) == pytest.approx(150 / 400)
    assert position_score(None, left, right) == 0.0


def test_spatial_rule_on_hand_detections():
    prompt = "a horse on the left of a car"
    parse = parse_prompt(prompt)
    horse, car = det("horse", (50, 100, 150, 200), 0.9), det("car", (300, 100, 400, 200), 0.8)
    assert spatial_score(prompt, parse, [horse, car], (512, 512)).score == pytest.approx(0.25 * 0.9 + 0.25 * 0.8 + 0.5)
    # on the wrong side: 0.425 < 0.5 counts 0
    wrong = det("horse", (350, 100, 450, 200), 0.9)
    assert spatial_score(prompt, parse, [wrong, car], (512, 512)).score == 0.0
    # the most confident horse counts, wherever it is listed
    assert spatial_score(prompt, parse, [det("horse", (350, 100, 450, 200), 0.6), car, horse], (512, 512)).score > 0.9
    # overlap: position 0.1 / IoU(1/3) = 0.3, so 0.425 + 0.15
    a, b = det("horse", (0, 0, 200, 200), 0.9), det("car", (100, 0, 300, 200), 0.8)
    assert spatial_score(prompt, parse, [a, b], (512, 512)).score == pytest.approx(0.575)
    # one object found is at most 0.25: 0
    assert spatial_score(prompt, parse, [horse], (512, 512)).score == 0.0
    # a score of exactly 0.5 is not kept (detectron2's scores > 0.5)
    result = spatial_score(prompt, parse, [det("horse", (50, 100, 150, 200), 0.5), car], (512, 512))
    assert result.score == 0.0 and result.details["found"] == ["car"]


def test_spatial_distances_are_in_unidets_frame():
    prompt = "a giraffe next to a lamp"
    parse = parse_prompt(prompt)
    giraffe, lamp = det("giraffe", (0, 0, 100, 100), 1.0), det("lamp", (400, 400, 500, 500), 1.0)
    # 400 px apart on a 1000 px image are 191.6 px in UniDet's 479 px frame: 150 / 191.6, not 150 / 400
    expected = 0.5 + 150 / (400 * 479 / 1000) / 2
    assert spatial_score(prompt, parse, [giraffe, lamp], (1000, 1000)).score == pytest.approx(expected)
    # on a 479 px image the frame is the image
    assert spatial_score(prompt, parse, [giraffe, lamp], (479, 479)).score == pytest.approx(0.5 + 150 / 400 / 2)


def test_complex_on_top_of_has_no_position():
    prompt = "The red hat was on top of the brown coat rack."
    parse = parse_prompt(prompt)
    hat, rack = (0, 0, 100, 100), (0, 200, 100, 300)
    assert spatial_score(prompt, parse, [det("hat", hat, 1.0), det("coat", rack, 1.0)], (512, 512), True).score == 0.5
    assert spatial_score(prompt, parse, [det("hat", hat, 0.9), det("coat", rack, 1.0)], (512, 512), True).score == 0


# -- the numeracy rule -------------------------------------------------------------------------------------------


def test_numeracy_targets_of_real_prompts():
    assert numeracy_targets(parse_prompt("two dogs")) == (["dog"], [2])
    assert numeracy_targets(parse_prompt("four tents, two boats and one pig")) == (["tent", "boat", "pig"], [4, 2, 1])
    assert numeracy_targets(parse_prompt("six girls")) == (["girl"], [6])
    assert numeracy_targets(parse_prompt("eight cats lounged in the sun")) == (["cat"], [8])
    with pytest.raises(BenchmarkError, match="no countable objects"):
        numeracy_targets(Parse((Token("sun", "NOUN"),), ()))


def test_numeracy_rule_on_hand_detections():
    parse, size = parse_prompt("two dogs"), (479, 479)
    dogs = [det("dog", (0, 0, 50, 50), 0.9), det("dog", (100, 0, 150, 50), 0.8)]
    assert numeracy_score(parse, dogs, size).score == 1.0
    assert numeracy_score(parse, [*dogs, det("dog", (200, 0, 250, 50), 0.7)], size).score == 0.5  # three
    assert numeracy_score(parse, dogs[:1], size).score == 0.5  # one
    assert numeracy_score(parse, [], size).score == 0.0
    # a second box on the same dog (IoU > 0.9) is merged; a weak one (<= 0.5) is not seen
    duplicate = det("dog", (1, 1, 50, 50), 0.7)
    assert numeracy_score(parse, [*dogs, duplicate, det("dog", (300, 0, 350, 50), 0.5)], size).score == 1.0
    # "six girls": people; a name not detected takes every label containing it ("hot dog" counts as a dog)
    people = [det("person", (60 * i, 0, 60 * i + 50, 50), 0.9) for i in range(6)]
    assert numeracy_score(parse_prompt("six girls"), people, size).score == 1.0
    hot_dogs = [det("hot dog", (0, 0, 50, 50), 0.9), det("hot dog", (100, 0, 150, 50), 0.8)]
    assert numeracy_score(parse, hot_dogs, size).score == 1.0
    assert numeracy_score(parse, [dogs[0], hot_dogs[1]], size).score == 0.5  # "dog" is found: no renaming
    # three objects, weight 1/3: tents right (1/3), one boat of two (1/6), the pig (1/3)
    scene = [det("tent", (60 * i, 0, 60 * i + 50, 50), 0.9) for i in range(4)]
    scene += [det("boat", (0, 100, 50, 150), 0.9), det("pig", (100, 100, 150, 150), 0.9)]
    result = numeracy_score(parse_prompt("four tents, two boats and one pig"), scene, size)
    assert result.score == pytest.approx(5 / 6)
    assert result.details["counts"] == {"tent": [4, 4], "boat": [2, 1], "pig": [1, 1]}


def test_same_box_is_calculate_iou():
    assert same_box((0, 0, 99, 99), (0, 0, 99, 99))
    assert same_box((0, 0, 99, 99), (5, 5, 94, 94))  # the smaller one is inside: 100% of it
    assert not same_box((0, 0, 99, 99), (50, 0, 149, 99))


# -- 3-in-1 -----------------------------------------------------------------------------------------------------


def test_three_in_one_by_hand():
    spatial = "The red hat was on top of the brown coat rack."  # complex_val_spatial.txt
    action = "The black phone was resting on the brown charger."  # complex_val_action.txt
    both = "The striped black and white cat lay next to the soft grey blanket."  # neither list
    assert three_in_one(spatial, blip=0.6, spatial=0.8, clip=0.3) == pytest.approx(0.7)
    assert three_in_one(action, blip=0.6, spatial=0.8, clip=0.3) == pytest.approx(0.45)
    assert three_in_one(both, blip=0.6, spatial=0.8, clip=0.3) == pytest.approx(1.7 / 3)


class FixedVQA:
    def yes(self, images, questions):
        return [[0.5] * len(qs) for qs in questions]


class FixedClip:
    def __init__(self):
        self.texts = []

    def similarity(self, images, texts):
        self.texts += texts
        return [0.3] * len(texts)


class ListedDetector:
    classes = ()

    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections

    def colors(self, image, detections):
        raise AssertionError("T2I-CompBench names no colours")


def write_sample(folder: Path, prompt: str, index: int, size=(64, 64)) -> Path:
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    path = folder / "samples" / f"{prompt}_{index:06d}.png"
    noise(*size, seed=index).save(path)
    return path


def test_complex_images_get_the_three_parts(tmp_path):
    prompts = ["The fluffy cat is on the left of the soft pillow.", "The black phone was resting on the brown charger."]
    for index, prompt in enumerate(prompts):
        write_sample(tmp_path, prompt, index, size=(479, 479))
    samples = read_samples(tmp_path, "complex", partial=True)
    detector = ListedDetector([det("cat", (0, 0, 100, 100), 0.8), det("pillow", (300, 0, 400, 100), 0.6)])
    clip = FixedClip()
    results = evaluate_samples(samples, "complex", vqa=FixedVQA(), clip=clip, detector=detector)
    cat, phone = results
    assert cat["details"]["blip"] == 0.25 and cat["details"]["spatial"] == pytest.approx(0.85)
    assert cat["answer"] == pytest.approx((0.85 + 0.25) / 2)  # a complex_val_spatial prompt
    assert phone["details"]["spatial"] == 0.0  # no listed preposition: no pair of objects
    assert phone["answer"] == pytest.approx((0.3 + 0.25) / 2)  # a complex_val_action prompt
    assert clip.texts[0] == "The cat is on the left of the pillow ."
    assert [r["question_id"] for r in results] == [0, 1]
    assert mean_score(results) == pytest.approx((cat["answer"] + phone["answer"]) / 2)


# -- the folder and the command line -----------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_read_samples_checks_the_layout(tmp_path):
    with pytest.raises(EvalFolderError, match="no such folder"):
        read_samples(tmp_path / "nope", "color")
    with pytest.raises(EvalFolderError, match="samples: missing"):
        read_samples(tmp_path, "color")
    write_sample(tmp_path, "a green bench and a blue bowl", 7)
    with pytest.raises(EvalFolderError, match="299 of the 300 color prompts have no image"):
        read_samples(tmp_path, "color")
    [sample] = read_samples(tmp_path, "color", partial=True)
    assert (sample.prompt, sample.question_id) == ("a green bench and a blue bowl", 7)
    with pytest.raises(EvalFolderError, match="is not a T2I-CompBench shape prompt"):
        read_samples(tmp_path, "shape", partial=True)
    noise(8, 8).save(tmp_path / "samples" / "nameless.png")
    with pytest.raises(EvalFolderError, match=r"nameless.png: not named \{prompt\}_\{index\}.png"):
        read_samples(tmp_path, "color", partial=True)


def test_cli_errors_are_one_line(tmp_path, clip_dir, offline):
    write_sample(tmp_path, "a green bench and a blue bowl", 0)
    assert_one_line_error(invoke("eval", "t2i-compbench", tmp_path / "nope", "--category", "color"), "no such folder")
    assert_one_line_error(invoke("eval", "t2i-compbench", tmp_path), "unknown T2I-CompBench category ''")
    assert_one_line_error(
        invoke("eval", "t2i-compbench", tmp_path, "--category", "3d_spatial"), "needs UniDet's depth expert"
    )
    assert_one_line_error(
        invoke("eval", "t2i-compbench", tmp_path, "--category", "color"), "299 of the 300 color prompts have no image"
    )
    line = assert_one_line_error(invoke("eval", "t2i-compbench", tmp_path, "--category", "color", "--clip-model", "x"))
    assert line == "error: --clip-model is not used by --category color (it asks no clip model)"
    args = ("eval", "t2i-compbench", tmp_path, "--category", "color", "--partial", "--device", "cpu")
    assert_one_line_error(
        invoke(*args), "cannot read the BLIP-VQA model's config from Salesforce/blip-vqa-capfilt-large: OSError"
    )
    assert_one_line_error(invoke(*args, "--blip-model", "./nowhere"), "no BLIP-VQA model folder at ./nowhere")
    line = assert_one_line_error(
        invoke("eval", "t2i-compbench", tmp_path, "--category", "numeracy", "--detector", "world", "--device", "cpu")
    )
    assert line == "error: --device is not used by --category numeracy with --detector world"
    args = ("eval", "t2i-compbench", tmp_path, "--category", "non_spatial", "--partial")
    assert_one_line_error(invoke(*args), "is not a T2I-CompBench non_spatial prompt")


def test_cli_scores_color_with_blip(tmp_path, blip_dir):
    write_sample(tmp_path, "a green bench and a blue bowl", 0)
    write_sample(tmp_path, "a green bench and a blue bowl", 1)
    write_sample(tmp_path, "a blue bench and a green bowl", 2)
    args = ("--category", "color", "--partial", "--blip-model", blip_dir, "--blip-image-size", 32, "--device", "cpu")
    result = invoke("eval", "t2i-compbench", tmp_path, *args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "results_color.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [0, 1, 2]
    assert [q for q, _ in rows[0]["details"]["questions"]] == ["a green bench?", "a blue bowl?"]
    for row in rows:
        assert row["answer"] == blip_score([p for _, p in row["details"]["questions"]])
    assert "BLIP-VQA" in result.stdout and f"{mean_score(rows):.4f}" in result.stdout


def test_cli_scores_non_spatial_and_spatial(tmp_path, clip_dir):
    prompt = t2icompbench_prompts("non_spatial")[0]
    write_sample(tmp_path, prompt, 0)
    args = ("--category", "non_spatial", "--partial", "--clip-model", clip_dir, "--device", "cpu")
    assert invoke("eval", "t2i-compbench", tmp_path, *args).exit_code == 0
    [row] = [json.loads(line) for line in (tmp_path / "results_non_spatial.jsonl").read_text().splitlines()]
    expected = ClipSimilarity.load(str(clip_dir)).similarity([Image.open(row["filename"])], [prompt])
    assert row["answer"] == pytest.approx(expected[0], abs=1e-5)
    spatial = tmp_path / "spatial"
    write_sample(spatial, "a horse on the left of a car", 0)
    result = invoke("eval", "t2i-compbench", spatial, "--category", "spatial", "--partial", "--detector", "world")
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in (spatial / "results_spatial.jsonl").read_text().splitlines()]
    assert row["answer"] == 0.0 and row["details"]["objects"] == ["horse", "car"]  # the world knows no horses


def test_cli_counts_with_mask2former_and_no_clip(tmp_path):
    """T2I-CompBench's rules name no colours: the Mask2Former detector loads without a CLIP."""
    detector_dir = tmp_path / "mask2former"
    tiny_mask2former(num_queries=6).save_pretrained(detector_dir)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 1333}).save_pretrained(detector_dir)
    detector = Mask2FormerDetector.load(str(detector_dir), None, test_scale=(64, 1333))
    image = noise(48, 40)
    assert len(detector.detect(image)) == 100 and detector.color_namer is None
    with pytest.raises(DetectorError, match="loaded without a CLIP model"):
        detector.colors(image, detector.detect(image)[:1])
    folder = tmp_path / "numeracy"
    write_sample(folder, "two dogs", 0, size=(48, 40))
    args = ("--category", "numeracy", "--partial", "--detector-model", detector_dir, "--device", "cpu")
    result = invoke("eval", "t2i-compbench", folder, *args)
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in (folder / "results_numeracy.jsonl").read_text().splitlines()]
    assert row["answer"] == 0.0 and row["details"]["counts"] == {"dog": [2, 0]}  # random scores stay <= 0.5
