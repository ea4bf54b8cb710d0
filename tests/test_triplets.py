"""The cached uint8 triplet dataset: decoding, mask bits, phrasings, cache, errors."""

import json
import os

import numpy as np
import pytest
import torch

from echo_vlsm.io import write_png
from echo_vlsm.models.tokenizer import ClipTokenizer
from echo_vlsm.train import decoding as D
from echo_vlsm.train import triplets as T

STRUCTS = ("lv", "myo", "la")


def tokenize(texts):
    return ClipTokenizer(context_length=16)(texts)


def make_dataset(root, n=3, size=32, split="train", mask_size=None):
    """Images with a gradient, masks of three rectangles, a task file in the contract's shape."""
    rng = np.random.default_rng(0)
    tasks = []
    for i in range(n):
        stem = f"patient{i + 1:04d}_2CH_E{'DS'[i % 2]}"
        write_png(root / f"images/{split}/{stem}.png",
                  rng.integers(0, 256, (size, size), dtype=np.uint8))
        for k, s in enumerate(STRUCTS):
            ms = mask_size or size
            m = np.zeros((ms, ms), np.uint8)
            m[k * ms // 4:(k + 2) * ms // 4, i:i + ms // 2] = 255
            write_png(root / f"masks/{s}/{split}/{stem}.png", m)
            tasks.append({
                "img_name": f"images/{split}/{stem}.png",
                "mask_name": f"masks/{s}/{split}/{stem}.png", "structure": s,
                "attributes": {"stem": stem, "structure": s, "view": "2CH", "phase": stem[-2:]},
                "prompts": {"p0": "", "p1": [f"{s} of the heart.",
                                             f"{s} in the cardiac ultrasound."],
                            "p2": [f"{s} in two-chamber view of the heart.",
                                   f"{s} in two-chamber view in the cardiac ultrasound."]}})
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "tasks" / f"{split}.json").write_text(json.dumps(tasks))
    return root


def test_decodes_once_per_image_with_mask_bits(tmp_path):
    root = make_dataset(tmp_path / "ds", n=3, size=32)
    data = T.load_triplets(root, "train", "p1", image_size=16, tokenize=tokenize,
                           full_masks=True, progress=False)
    assert len(data) == 9 and data.images.shape == (3, 16, 16)
    assert data.images.dtype == torch.uint8 and data.masks.dtype == torch.uint8
    assert data.full_masks.shape == (3, 32, 32)
    assert [s["structure"] for s in data.samples[:3]] == list(STRUCTS)
    assert data.samples[0]["sample"] == "patient0001_2CH_ED" and data.samples[1]["phase"] == "ED"
    for i, s in enumerate(data.samples):  # every triplet's full mask equals its file
        on_disk = D.read_image(root / s["mask_name"]) > 127
        assert torch.equal(data.full_mask(torch.tensor([i]))[0], torch.from_numpy(on_disk))
    images, masks, ids, attn = data.batch(torch.tensor([0, 4, 8]))
    assert images.shape == (3, 16, 16) and masks.dtype == torch.bool and masks.shape == (3, 16, 16)
    small = torch.from_numpy(D.resize((D.read_image(root / data.samples[4]["mask_name"]) > 127)
                                       .astype(np.uint8), 16, mask=True) > 0)
    assert torch.equal(masks[1], small)
    # the token columns are the split's longest prompt's, not the tokenizer's 16
    width = max(int(tokenize([t])[1].sum()) for phr in data.texts for t in phr)
    assert width < 16 and data.input_ids.shape[-1] == width
    assert ids.shape == (3, width) and ids.dtype == torch.long and attn.shape == (3, width)
    full_ids, full_mask = tokenize([data.texts[4][0]])
    assert torch.equal(ids[1], full_ids[0, :width]) and torch.equal(attn[1], full_mask[0, :width])
    assert not full_mask[0, width:].any()  # only padding was dropped


def test_both_phrasings_are_tokenized_and_drawn(tmp_path):
    root = make_dataset(tmp_path / "ds", n=2)
    data = T.load_triplets(root, "train", "p2", 16, tokenize, progress=False)
    assert data.n_phrasings.tolist() == [2] * 6 and data.input_ids.shape[:2] == (6, 2)
    ids0, _ = tokenize([data.texts[0][0]])
    ids1, _ = tokenize([data.texts[0][1]])
    width = data.input_ids.shape[-1]
    assert torch.equal(data.input_ids[0, 0], ids0[0, :width])
    assert torch.equal(data.input_ids[0, 1], ids1[0, :width])
    draws = torch.stack([data.draw_phrasings(torch.Generator().manual_seed(s)) for s in range(20)])
    assert set(draws.unique().tolist()) == {0, 1}
    picked = data.batch(torch.arange(6), torch.ones(6, dtype=torch.long))[2]
    assert torch.equal(picked, data.input_ids[:, 1])
    empty = T.load_triplets(root, "train", "p0", 16, tokenize, progress=False)
    assert empty.n_phrasings.tolist() == [1] * 6 and empty.texts[0] == [""]
    assert set(empty.draw_phrasings(torch.Generator().manual_seed(0)).tolist()) == {0}


def test_cache_is_reused_and_follows_file_changes(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", n=2)
    first = T.load_triplets(root, "train", "p1", 16, tokenize, progress=False)
    assert any((root / ".cache").glob("pixels-train-16-*.pt"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(D, "decode_split", no_decoding)
        again = T.load_triplets(root, "train", "p1", 16, tokenize, progress=False)
    assert torch.equal(first.images, again.images) and torch.equal(first.masks, again.masks)
    mask_path = root / first.samples[0]["mask_name"]
    write_png(mask_path, np.full((32, 32), 255, np.uint8))
    os.utime(mask_path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    changed = T.load_triplets(root, "train", "p1", 16, tokenize, progress=False)
    assert changed.batch(torch.tensor([0]))[1].all()
    other = tmp_path / "cache"
    T.load_triplets(root, "train", "p1", 8, tokenize, cache_dir=other, progress=False)
    assert any(other.glob("pixels-train-8-*.pt")) and any(other.glob("tokens-train-p1-*.pt"))


def test_normalise_on_device_matches_the_formula():
    images = torch.tensor([[[0, 255], [128, 64]]], dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = T.normalise(images, mean, std, channels_last=True)
    assert x.shape == (1, 3, 2, 2) and x.is_contiguous(memory_format=torch.channels_last)
    for c in range(3):
        expected = (images[0].float() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(x[0, c], expected)


def test_missing_task_file_is_an_error_naming_it(tmp_path):
    root = make_dataset(tmp_path / "ds", n=1)
    with pytest.raises(T.TripletError, match=r"tasks/val\.json.*write_tasks"):
        T.load_triplets(root, "val", "p1", 16, tokenize, progress=False)


def test_image_mask_size_mismatch_names_both_files(tmp_path):
    root = make_dataset(tmp_path / "ds", n=1, size=32, mask_size=24)
    with pytest.raises(T.TripletError, match=r"masks/lv/train/patient0001_2CH_ED\.png.*24x24.*"
                                             r"images/train/patient0001_2CH_ED\.png is 32x32"):
        T.load_triplets(root, "train", "p1", 16, tokenize, cache_dir=False, progress=False)


def test_unknown_or_absent_prompt_key_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds", n=1)
    with pytest.raises(T.TripletError, match=r"train\.json.*unknown prompt key 'p9'.*p7"):
        T.load_triplets(root, "train", "p9", 16, tokenize, progress=False)
    with pytest.raises(T.TripletError, match="unknown prompt key 'heart'"):
        T.load_triplets(root, "train", "heart", 16, tokenize, progress=False)
    with pytest.raises(T.TripletError, match=r"has no prompt 'p5'.*\['p0', 'p1', 'p2'\]"):
        T.load_triplets(root, "train", "p5", 16, tokenize, progress=False)


def test_missing_image_file_is_an_error_naming_it(tmp_path):
    root = make_dataset(tmp_path / "ds", n=1)
    (root / "images/train/patient0001_2CH_ED.png").unlink()
    with pytest.raises(T.TripletError, match=r"patient0001_2CH_ED\.png.*does not exist"):
        T.load_triplets(root, "train", "p1", 16, tokenize, progress=False)


# -- the split's token columns: its longest prompt's ------------------------------------------
@pytest.mark.parametrize("name", ["clipseg", "cris"])
def test_trimmed_tokens_give_the_models_output_to_float_rounding(name):
    from echo_vlsm.models import build_model

    torch.manual_seed(0)
    net = build_model(name, "tiny", encoders="trained").eval()
    texts = ["Left ventricular cavity.", "",
             "Left atrium in two-chamber view of a 62-year-old woman, good image quality."] * 2
    ids, mask = net.tokenize(texts)
    short_ids, short_mask = T.trim_padding(ids, mask)
    assert ids.shape[1] == 77 and short_ids.shape[1] == int(mask.sum(1).max()) < 30
    side = net.spec.image_size
    pixels = torch.randn(len(texts), 3, side, side)
    with torch.no_grad():
        full, short = net(pixels, ids, mask), net(pixels, short_ids, short_mask)
    assert torch.allclose(full, short, atol=1e-5, rtol=0)
    assert full.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_only_columns_of_padding_in_every_row_after_the_last_token_are_dropped():
    ids = torch.tensor([[49406, 0, 320, 49407, 0, 0], [49406, 49407, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    out_ids, out_mask = T.trim_padding(ids, mask)  # the inner 0 stays: a column in use follows
    assert torch.equal(out_ids, ids[:, :4]) and torch.equal(out_mask, mask[:, :4])
    nothing = torch.zeros(2, 6, dtype=torch.long)
    assert T.trim_padding(ids, nothing)[0].shape == (2, 1)  # one column is always kept


def test_parts_trimmed_to_other_widths_are_padded_to_one(tmp_path):
    short = T.load_triplets(make_dataset(tmp_path / "a", n=2), "train", "p1", 16, tokenize,
                            progress=False)
    long = T.load_triplets(make_dataset(tmp_path / "b", n=2), "train", "p2", 16, tokenize,
                           progress=False)
    narrow, wide = short.input_ids.shape[-1], long.input_ids.shape[-1]
    assert narrow < wide
    both = T.concat_triplets([short, long])
    assert both.input_ids.shape[-1] == wide == both.attention_mask.shape[-1]
    n = len(short)
    assert torch.equal(both.input_ids[:n, :, :narrow], short.input_ids)
    assert not both.input_ids[:n, :, narrow:].any()
    assert not both.attention_mask[:n, :, narrow:].any()
    assert torch.equal(both.input_ids[n:], long.input_ids)
