"""The offline CLIP tokenizer gives CLIP's ids (checked against transformers' CLIPTokenizer
built from the same vocabulary), 77 tokens, an attention mask, and keeps end-of-text when
truncating."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from echo_vlsm.models.tokenizer import EOT_ID, PAD_ID, SOT_ID, ClipTokenizer, default_bpe_path

PROMPTS = [
    "",
    "Left ventricular cavity of the heart.",
    "Myocardium of triangle shape in two-chamber view in the cardiac ultrasound at end of the "
    "diastole cycle of a fifty-six-year-old female.",
    "Left ventricular cavity of oval shape in two-chamber view of the heart at end of the "
    "diastole cycle of a seventy-three-year-old male with good image quality.",
    "  Left   atrium cavity, 4CH view; ED/ES — café 123 it's   ",
    " ".join(["the left ventricular cavity of a eighty-four-year-old female"] * 12),  # > 77
]


@pytest.fixture(scope="module")
def tok():
    return ClipTokenizer()


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory, tok):
    """transformers' CLIPTokenizer from vocab.json and merges.txt written from open_clip's
    bundled BPE file (what OpenAI's CLIP ships)."""
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip_vocab")
    lines = gzip.open(default_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = dict(tok._bpe.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    hf = CLIPTokenizer.from_pretrained(str(folder))
    assert hf.bos_token_id == SOT_ID and hf.eos_token_id == EOT_ID
    return hf


def test_ids_equal_transformers_clip_tokenizer(tok, hf_tokenizer):
    ids, mask = tok(PROMPTS)
    ref = hf_tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=77,
                       return_tensors="pt")
    assert ids.shape == (len(PROMPTS), 77) and mask.shape == ids.shape
    assert torch.equal(mask, ref["attention_mask"].long())
    # same ids where there is text; padding differs by design (0 here, 49407 there)
    assert torch.equal(ids[mask.bool()], ref["input_ids"][mask.bool()])
    assert (ids[~mask.bool()] == PAD_ID).all()


def test_structure_truncation_and_lengths(tok):
    ids, mask = tok(PROMPTS)
    lengths = tok.token_lengths(PROMPTS)
    assert lengths[0] == 2 and lengths[-1] > 77
    for row, m, n in zip(ids, mask, lengths):
        used = int(m.sum())
        assert used == min(n, 77)
        assert row[0] == SOT_ID and row[used - 1] == EOT_ID
        assert (m[:used] == 1).all() and (m[used:] == 0).all()
        assert int(row.argmax()) == used - 1  # CLIP reads the sentence at the argmax (EOT)
    # a truncated prompt keeps its first 75 text tokens and ends with end-of-text
    full = tok.encode(PROMPTS[-1])
    assert ids[-1, :76].tolist() == full[:76] and ids[-1, 76] == EOT_ID


def test_decode_round_trip_and_bad_input(tok):
    ids, _ = tok(["Left ventricular cavity of the heart."])
    assert tok.decode(ids[0]) == "left ventricular cavity of the heart ."
    single, _ = tok("Myocardium")
    assert single.shape == (1, 77)
    with pytest.raises(TypeError, match="str"):
        tok(["ok", 3])
    with pytest.raises(ValueError, match="non-empty"):
        tok([])
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(context_length=1)
    short_ids, short_mask = ClipTokenizer(context_length=8)(["a b c d e f g h i j"])
    assert short_ids.shape == (1, 8) and short_ids[0, -1] == EOT_ID and short_mask.all()


def test_models_share_the_tokenizer_mixin(tok):
    from types import SimpleNamespace

    from echo_vlsm.models.clipseg import CLIPSeg
    from echo_vlsm.models.cris import CRIS
    from echo_vlsm.models.tokenizer import TokenizerMixin

    assert issubclass(CLIPSeg, TokenizerMixin) and issubclass(CRIS, TokenizerMixin)
    assert CLIPSeg.tokenize is CRIS.tokenize is TokenizerMixin.tokenize

    class Model(TokenizerMixin):
        spec = SimpleNamespace(context_length=16)

    model = Model()
    ids, mask = model.tokenize(["Left ventricular cavity.", "Myocardium."])
    ref_ids, ref_mask = ClipTokenizer(16)(["Left ventricular cavity.", "Myocardium."])
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask) and ids.shape == (2, 16)
    assert model.tokenizer is model.tokenizer  # built once
