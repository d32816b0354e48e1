"""GenEval's detector on transformers (thinkdraw.evaluator.mask2former), on tiny random Mask2Former and CLIP models
saved to folders and loaded back: mmdet's post-processing with nothing cut, official class names, the official
masked crop over #999, clip_benchmark's zero-shot colours; the shipped benchmark data; the CLI and its errors.

Expected values come from the official code (djghosh13/geneval evaluation/evaluate_images.py, mmdet 2.x
MaskFormerFusionHead, clip_benchmark 1.4.0, open_clip 2.20.0's eval transform), worked out by hand below.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from test_cli import assert_one_line_error, invoke
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessorPil,
    SwinConfig,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.utils import logging as hf_logging

from thinkdraw.errors import DetectorError, ThinkdrawError
from thinkdraw.evaluator.detection import Detection
from thinkdraw.evaluator.geneval import GENEVAL_DATA, geneval_classes, geneval_prompts, write_prompt_folder
from thinkdraw.evaluator.mask2former import (
    BACKGROUND,
    COCO_NAMES,
    MAX_PER_IMAGE,
    Mask2FormerDetector,
    check_labels,
    clip_view,
    color_prompts,
    instance_results,
    mask_boxes,
    masked_crop,
)
from thinkdraw.evaluator.rules import COLOR_NAMES, judge, judge_image

NAMES = geneval_classes()
COCO_ID2LABEL = {i: COCO_NAMES.get(name, name) for i, name in enumerate(NAMES)}  # as a COCO checkpoint names them
CLIP_SIZE = 32


# -- tiny models, saved and loaded as a user's would be --------------------------------------------------------


def tiny_mask2former(num_queries: int, seed: int = 0) -> Mask2FormerForUniversalSegmentation:
    torch.manual_seed(seed)
    swin = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=swin,
        num_queries=num_queries,
        hidden_dim=32,  # GroupNorm(32, ...) in the pixel decoder
        mask_feature_size=32,
        feature_size=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
        num_attention_heads=2,
        num_labels=80,
        id2label=COCO_ID2LABEL,
    )
    return Mask2FormerForUniversalSegmentation(config).eval()


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE with no merges: every character a token, '</w>' ending a word; CLIP's specials last."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip(tokenizer: CLIPTokenizer, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=CLIP_SIZE,
        patch_size=8,
    )
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@pytest.fixture(autouse=True, scope="module")
def quiet_loading():
    hf_logging.disable_progress_bar()  # what `thinkdraw` does through HF_HUB_DISABLE_PROGRESS_BARS
    yield
    hf_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mask2former")
    tiny_mask2former(num_queries=6).save_pretrained(path)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 800, "longest_edge": 1333}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip")
    tokenizer = tiny_clip_tokenizer()
    tiny_clip(tokenizer).save_pretrained(path)
    size = {"shortest_edge": CLIP_SIZE}
    processor = CLIPImageProcessorPil(size=size, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def detector(detector_dir, clip_dir) -> Mask2FormerDetector:
    # a small test scale keeps the tiny model fast; the default is mmdet's (800, 1333)
    return Mask2FormerDetector.load(str(detector_dir), str(clip_dir), test_scale=(64, 1333))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


# -- the shipped benchmark -------------------------------------------------------------------------------------


def test_official_metadata_ships_with_the_package():
    prompts = geneval_prompts()
    assert len(prompts) == 553
    counts = {tag: sum(p["tag"] == tag for p in prompts) for tag in dict.fromkeys(p["tag"] for p in prompts)}
    assert counts == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    assert prompts[0] == {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    }
    assert len(NAMES) == 80 and len(set(NAMES)) == 80
    assert (NAMES[0], NAMES[64], NAMES[65], NAMES[66], NAMES[79]) == (
        "person",
        "computer mouse",
        "tv remote",
        "computer keyboard",
        "toothbrush",
    )
    assert "MIT License" in (GENEVAL_DATA / "LICENSE").read_text()
    # an installed wheel carries them: the package-data globs of pyproject.toml cover every shipped file
    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["thinkdraw"]
    package = root / "thinkdraw"
    covered = {p for g in globs for p in package.glob(g) if p.is_file()}
    assert sorted(p.name for p in GENEVAL_DATA.iterdir()) == [
        "LICENSE",
        "evaluation_metadata.jsonl",
        "object_names.txt",
    ]
    assert set(GENEVAL_DATA.iterdir()) <= covered


# -- detection: mmdet's post-processing, nothing cut -----------------------------------------------------------


def test_mask_boxes_are_the_extent_plus_one():
    masks = torch.zeros(3, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True  # rows 1-2, columns 2-4
    masks[1, 4, 6] = True  # one pixel in the corner
    assert mask_boxes(masks).tolist() == [[2, 1, 5, 3], [6, 4, 7, 5], [0, 0, 0, 0]]  # empty: zeros, as mmdet


def test_instance_results_by_hand():
    """Two queries, three classes: the best (query, class) pairs, a query standing for two classes, padding cropped
    before the bilinear upsampling to the image, score = class probability x mean mask probability in the mask."""
    class_logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.05, 0.05, 0.2, 0.7]]))  # [Q=2, C+1=4]
    mask_logits = torch.full((2, 2, 2), -5.0)  # [Q, h, w]: input 8x8, the resized image in its left half
    mask_logits[0, 0, 0] = 3.0  # query 0: a corner of the image's half
    mask_logits[1, :, 1] = 3.0  # query 1: only the padding
    labels, queries, scores, masks = instance_results(class_logits, mask_logits, (8, 8), (8, 4), (6, 3), 3)
    assert labels.tolist() == [0, 1, 2] and queries.tolist() == [0, 0, 1]  # probs 0.5, 0.3, 0.2 of the six
    assert masks.shape == (2, 6, 3)  # per query, at the image's size
    up = F.interpolate(mask_logits[None], size=(8, 8), mode="bilinear", align_corners=False)[:, :, :, :4]
    up = F.interpolate(up, size=(6, 3), mode="bilinear", align_corners=False)[0, 0]  # [6, 3]
    inside = up > 0
    mean_prob = (up.sigmoid() * inside).sum() / (inside.sum() + 1e-6)
    assert 0 < inside.sum() < 18 and torch.equal(masks[0], inside) and not masks[1].any()
    assert torch.allclose(scores, torch.stack([0.5 * mean_prob, 0.3 * mean_prob, torch.tensor(0.0)]), atol=1e-6)
    labels, *_ = instance_results(class_logits, mask_logits, (8, 8), (8, 4), (6, 3))
    assert len(labels) == 6  # never more than there are pairs


def test_detect_keeps_every_pair_with_masks_and_official_names(detector):
    image = noise(48, 40)
    detections = detector.detect(image)
    assert len(detections) == min(MAX_PER_IMAGE, 6 * 80)  # mmdet's top 100 (query, class) pairs, no score cut
    assert all(d.score < 0.3 for d in detections)  # a random model: all below the rules' threshold, all kept
    assert {d.label for d in detections} <= set(NAMES)
    masks = {id(d.mask): d.mask for d in detections}
    assert len(masks) <= 6  # one mask per query: 100 pairs share the 6 queries' masks
    for d in detections:
        assert d.mask.shape == (40, 48) and d.mask.dtype == bool  # the image's size
        assert 0.0 <= d.score <= 1.0
        ys, xs = np.nonzero(d.mask)
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
        assert d.box == tuple(float(v) for v in expected)
        assert 0 <= d.box[0] <= d.box[2] <= 48 and 0 <= d.box[1] <= d.box[3] <= 40
    assert detector.detect(image) == detections  # deterministic


def test_detect_agrees_with_transformers_where_their_geometry_meets(tmp_path, clip_dir):
    """At a 384x384 image and input, transformers' post_process_instance_segmentation (which resamples every mask
    to 384x384) and mmdet's way coincide, and the hub model's 100 queries make its top-k mmdet's max_per_image:
    the same pairs, scores (transformers rounds to 6 decimals) and masks. Elsewhere only mmdet's way is kept."""
    tiny_mask2former(num_queries=100, seed=1).save_pretrained(tmp_path)
    processor = Mask2FormerImageProcessorPil()
    processor.save_pretrained(tmp_path)
    detector = Mask2FormerDetector.load(str(tmp_path), str(clip_dir), test_scale=(384, 1333))
    image = noise(384, 384, seed=2)
    ours = detector.detect(image)
    inputs = processor(images=image, size={"shortest_edge": 384, "longest_edge": 1333}, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    theirs = processor.post_process_instance_segmentation(
        outputs, threshold=0.0, target_sizes=[(384, 384)], return_binary_maps=True
    )[0]
    kept = [d for d in ours if d.mask.any()]  # transformers drops empty masks (score 0 in mmdet's way)
    assert len(kept) == len(theirs["segments_info"]) > 50
    # as multisets (their top-k is unsorted): random queries may tie on label and rounded score
    ours_set = Counter((NAMES.index(d.label), round(d.score, 6), d.mask.tobytes()) for d in kept)
    their_masks = theirs["segmentation"].numpy().astype(bool)  # [n, 384, 384]
    their_set = Counter(
        (info["label_id"], info["score"], mask.tobytes())
        for info, mask in zip(theirs["segments_info"], their_masks, strict=True)
    )
    assert ours_set == their_set


def test_labels_must_be_cocos_in_cocos_order():
    check_labels(COCO_ID2LABEL, NAMES)
    check_labels(dict(enumerate(NAMES)), NAMES)  # GenEval's own spelling
    check_labels({i: f"LABEL_{i}" for i in range(80)}, NAMES)  # no names: mapped by index, as the official code
    swapped = {**COCO_ID2LABEL, 15: "dog", 16: "cat"}
    with pytest.raises(DetectorError, match="label 15 is 'dog', where GenEval's label 15 is 'cat'"):
        check_labels(swapped, NAMES)
    with pytest.raises(DetectorError, match="has 133 labels; GenEval needs a COCO instance model with 80"):
        check_labels({i: f"LABEL_{i}" for i in range(133)}, NAMES)  # a panoptic head (things + stuff)


# -- colour: the official crop, clip_benchmark's classifier ----------------------------------------------------


def test_masked_crop_is_the_image_inside_the_mask_over_999():
    pixels = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(5, 6, 3)  # every pixel its own colour
    image = Image.fromarray(pixels)
    mask = np.zeros((5, 6), dtype=bool)
    mask[1, 2] = mask[2, 1:4] = mask[3, 2] = True  # a plus sign
    crop = np.asarray(masked_crop(image, mask, (1.0, 1.0, 4.0, 4.0)))
    expected = np.full((3, 3, 3), 153, dtype=np.uint8)
    for y, x in ((1, 2), (2, 1), (2, 2), (2, 3), (3, 2)):
        expected[y - 1, x - 1] = pixels[y, x]
    assert BACKGROUND == (153, 153, 153)
    assert np.array_equal(crop, expected)
    assert np.array_equal(np.asarray(masked_crop(image, None, (1, 1, 4, 4))), pixels[1:4, 1:4])  # no mask: plain
    rounded = masked_crop(image, mask, (0.6, 1.4, 3.5, 4.5))  # PIL rounds half to even: (1, 1, 4, 4)
    assert np.array_equal(np.asarray(rounded), expected)
    with pytest.raises(DetectorError, match=r"a mask of shape \(6, 5\) for an image of 6x5"):
        masked_crop(image, mask.T, (0, 0, 2, 2))


def test_clip_view_is_open_clips_resize_and_center_crop():
    columns = np.tile(np.arange(11, dtype=np.uint8)[None, :, None], (4, 1, 3))  # pixel value = its column
    view = clip_view(Image.fromarray(columns), 4)  # short side already 4: no resize
    assert view.size == (4, 4)
    assert np.asarray(view)[0, :, 0].tolist() == [4, 5, 6, 7]  # torchvision: round(3.5) = 4, not floor 3
    assert clip_view(noise(30, 10), 8).size == (8, 8)  # 30x10 -> 24x8 bicubic, then the centre
    with pytest.raises(DetectorError, match="empty crop"):
        clip_view(Image.new("RGB", (0, 0)), 8)


def test_color_prompts_are_the_official_templates():
    prompts = color_prompts("dog")
    assert len(prompts) == len(COLOR_NAMES) == 10
    assert prompts[0] == ["a photo of a red dog", "a photo of a red-colored dog", "a photo of a red object"]
    assert prompts[1][0] == "a photo of a orange dog"  # the official article, word for word
    assert color_prompts("traffic light")[9][1] == "a photo of a white-colored traffic light"


def test_colors_are_clip_benchmarks_zero_shot_on_the_masked_crop(detector):
    """Against a computation written out from clip_benchmark and open_clip: each text alone, normalised, averaged
    over the three templates, normalised; the crop resized and centre-cropped, normalised with CLIP's mean/std."""
    clip = detector.color_namer
    model = clip.model
    tokenizer = clip.processor.tokenizer
    with torch.no_grad():
        rows = []
        for texts in color_prompts("cup"):
            feats = [model.get_text_features(**tokenizer([t], return_tensors="pt")).pooler_output[0] for t in texts]
            mean = torch.stack([f / f.norm() for f in feats]).mean(dim=0)
            rows.append(mean / mean.norm())
        classifier = torch.stack(rows, dim=1)  # [D, 10]
    assert torch.allclose(clip.classifier("cup"), classifier, atol=1e-5)

    image = noise(40, 30, seed=3)
    mask = np.zeros((30, 40), dtype=bool)
    for y in range(5, 20):
        mask[y, 8 : 9 + (y - 5) * 3 // 2] = True  # a triangle: its box (8, 5, 30, 20) holds grey too
    det = Detection("cup", (8.0, 5.0, 30.0, 20.0), 0.9, mask=mask)
    crop = masked_crop(image, mask, det.box)
    view = np.asarray(clip_view(crop, CLIP_SIZE), dtype=np.float32) / 255.0  # [32, 32, 3]
    mean, std = np.array(clip.processor.image_processor.image_mean), np.array(clip.processor.image_processor.image_std)
    pixels = torch.from_numpy(((view - mean) / std).transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=pixels).pooler_output
    expected = 100.0 * F.normalize(feats, dim=-1) @ classifier  # [1, 10]
    assert torch.allclose(clip.logits([crop], "cup"), expected, atol=1e-4)
    colors = detector.colors(image, [det])
    assert colors == [COLOR_NAMES[int(expected.argmax())]]
    # the mask matters: the plain crop is another picture
    plain = Detection("cup", det.box, 0.9)
    assert not torch.allclose(clip.logits([masked_crop(image, None, plain.box)], "cup"), expected, atol=1e-3)


def test_colors_keep_order_across_classes(detector):
    image = noise(20, 20, seed=4)
    dets = [Detection("cup", (0.0, 0.0, 10.0, 10.0), 0.5), Detection("dog", (5.0, 5.0, 20.0, 20.0), 0.5)]
    dets.append(dets[0])
    colors = detector.colors(image, dets)
    assert len(colors) == 3 and set(colors) <= set(COLOR_NAMES)
    assert colors[0] == colors[2] == detector.colors(image, [dets[0]])[0]
    assert colors[1] == detector.colors(image, [dets[1]])[0]
    assert detector.colors(image, []) == []


# -- the rules over this detector's output ---------------------------------------------------------------------


def test_one_mask_as_two_classes_counts_for_both():
    """mmdet's top-k runs over (query, class) pairs, so one object may be found as two classes; the official rules
    then count it for both: a two-object prompt passes on one object seen as cat and as dog."""
    mask = np.ones((8, 8), dtype=bool)
    dets = [
        Detection("cat", (0.0, 0.0, 8.0, 8.0), 0.6, mask=mask),
        Detection("dog", (0.0, 0.0, 8.0, 8.0), 0.35, mask=mask),
    ]
    record = {"tag": "two_object", "prompt": "a photo of a cat and a dog"}
    verdict = judge({**record, "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}]}, dets)
    assert verdict.correct and verdict.detections["dog"][0].mask is mask


def test_judge_image_names_colours_of_the_most_confident_with_their_masks(detector, monkeypatch):
    image = noise(16, 16, seed=5)
    masks = [np.eye(16, dtype=bool), np.ones((16, 16), dtype=bool), np.zeros((16, 16), dtype=bool)]
    found = [
        Detection("bench", (0.0, 0.0, 16.0, 16.0), 0.5, mask=masks[0]),
        Detection("bench", (0.0, 0.0, 16.0, 16.0), 0.8, mask=masks[1]),
        Detection("bench", (0.0, 0.0, 16.0, 16.0), 0.2, mask=masks[2]),
    ]
    asked = []
    monkeypatch.setattr(detector, "detect", lambda img: found)

    def namer(crops, name):
        asked.append((len(crops), name))
        return ["red"] * len(crops)

    monkeypatch.setattr(detector, "color_namer", namer)
    record = {
        "tag": "colors",
        "prompt": "a photo of a red bench",
        "include": [{"class": "bench", "count": 1, "color": "red"}],
    }
    assert judge_image(record, image, detector).correct
    assert asked == [(1, "bench")]  # only the most confident bench (0.8): count 1
    three = {**record, "include": [{"class": "bench", "count": 3, "color": "red"}]}
    assert judge_image(three, image, detector).reason == "expected bench>=3, found 2"  # 0.2 is under the threshold
    assert asked == [(1, "bench")]  # too few benches: no colour is asked


# -- loading errors --------------------------------------------------------------------------------------------


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_missing_folders_and_wrong_models(tmp_path, detector_dir, clip_dir):
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load(str(tmp_path / "nope"), str(clip_dir))
    assert one_line(err) == f"no detector folder at {tmp_path / 'nope'}"
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load(str(tmp_path), str(clip_dir))
    assert one_line(err) == f"{tmp_path} has no config.json: not a saved detector"
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load(str(clip_dir), str(clip_dir))
    assert one_line(err) == f"{clip_dir} holds a 'clip' model, not a 'mask2former' one"
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load(str(detector_dir), str(detector_dir))
    assert one_line(err) == f"{detector_dir} holds a 'mask2former' model, not a 'clip' one"
    assert issubclass(DetectorError, ThinkdrawError)


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_id_offline_is_one_line(offline, clip_dir):
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load("nobody-here/no-such-mask2former", str(clip_dir))
    message = one_line(err)
    assert message.startswith("cannot read the detector's config from nobody-here/no-such-mask2former: OSError")
    assert message.endswith("(a hub id needs the network, or its files in the Hugging Face cache)")


def test_missing_weights_are_refused(tmp_path, clip_dir):
    """transformers would fill a missing weight with a random one and only warn."""
    tiny_mask2former(num_queries=6).save_pretrained(tmp_path)
    Mask2FormerImageProcessorPil().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["class_predictor.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DetectorError) as err:
        Mask2FormerDetector.load(str(tmp_path), str(clip_dir))
    assert one_line(err) == (
        f"the detector at {tmp_path} does not match its config: missing keys ['class_predictor.weight']"
    )


# -- the command line ------------------------------------------------------------------------------------------


@pytest.fixture
def geneval_dir(tmp_path) -> Path:
    """Two official prompts in GenEval's layout, one noise image each."""
    prompts = geneval_prompts()
    for index in (0, 259):  # a single object, a colour
        write_prompt_folder(tmp_path, index, prompts[index], [noise(48, 40, seed=index)])
    return tmp_path


def test_cli_scores_with_mask2former(geneval_dir, detector_dir, clip_dir):
    models = ("--detector-model", detector_dir, "--clip-model", clip_dir, "--device", "cpu")
    result = invoke("eval", "geneval", geneval_dir, "--detector", "mask2former", *models)
    assert result.exit_code == 0, result.output
    lines = (geneval_dir / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [list(r) for r in rows] == [["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]] * 2
    assert [r["tag"] for r in rows] == ["single_object", "colors"]
    assert rows[0]["reason"] == "expected bench>=1, found 0" and json.loads(rows[0]["details"]) == {}  # all < 0.3


def test_cli_model_options_need_a_model_detector(geneval_dir, clip_dir):
    for option, value in (("--clip-model", clip_dir), ("--detector-model", clip_dir), ("--device", "cpu")):
        line = assert_one_line_error(invoke("eval", "geneval", geneval_dir, option, value))
        assert line == f"error: {option} is not used by --detector world (it runs no model)"


def test_cli_unreachable_models_are_one_line(geneval_dir, clip_dir, detector_dir, offline):
    args = ("eval", "geneval", geneval_dir, "--detector", "mask2former")
    assert_one_line_error(invoke(*args, "--detector-model", "./nowhere"), "no detector folder at ./nowhere")
    assert_one_line_error(
        invoke(*args, "--clip-model", clip_dir),  # the default detector id, offline
        "cannot read the detector's config from facebook/mask2former-swin-small-coco-instance: OSError",
    )
    assert_one_line_error(
        invoke(*args, "--detector-model", detector_dir),  # the default CLIP id, offline
        "cannot read the CLIP model's config from openai/clip-vit-large-patch14: OSError",
    )


def test_cli_checks_the_folder_before_loading(tmp_path, geneval_dir):
    args = ("--detector", "mask2former", "--detector-model", tmp_path / "no-model")
    assert_one_line_error(invoke("eval", "geneval", tmp_path / "nope", *args), "nope: no such folder")
    (geneval_dir / "00000" / "samples" / "0000.png").unlink()
    (geneval_dir / "00000" / "samples").rmdir()
    assert_one_line_error(invoke("eval", "geneval", geneval_dir, *args), "00000/samples: missing")
    (geneval_dir / "00000" / "samples").mkdir()
    assert_one_line_error(invoke("eval", "geneval", geneval_dir, *args), "00000/samples: no PNG images")
    record = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    (geneval_dir / "00000" / "metadata.jsonl").write_text(json.dumps(record))
    assert_one_line_error(invoke("eval", "geneval", geneval_dir, *args), "class 'circle' is not one the detector knows")
    line = assert_one_line_error(invoke("eval", "geneval", geneval_dir, "--detector", "mask2former", "--device", "tpu"))
    assert line == "error: --device 'tpu': choose auto, cpu, cuda or cuda:N"
