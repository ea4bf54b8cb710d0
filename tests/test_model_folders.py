"""Model folders from elsewhere (issue 23, section 4): only safetensors, JSON and the
tokenizer's vocabulary are ever read from an exported model folder, and each damage is a clear
error naming the file. Every folder here is written by the test (a tiny random CRIS in the
layout of ``echo-vlsm export-model``) and then damaged; a pickle whose ``__reduce__`` would
create a marker file proves that nothing is unpickled on any path."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from echo_vlsm import inference
from echo_vlsm.models import EXPORT_FORMAT, build_model
from echo_vlsm.models.tokenizer import default_bpe_path

VOCAB = "bpe_simple_vocab_16e6.txt.gz"


class Evil:
    """Unpickling it creates the file named by ``$ECHO_VLSM_TEST_MARKER``."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["ECHO_VLSM_TEST_MARKER"]),))


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model") / "cris"
    root.mkdir()
    model = build_model("cris", "tiny")
    save_model(model, str(root / "model.safetensors"))
    shutil.copyfile(default_bpe_path(), root / VOCAB)
    (root / "config.json").write_text(json.dumps({
        "format": EXPORT_FORMAT, "format_version": 1, "model": "cris", "size": "tiny",
        "encoders": "trained", "prompt": "p1", "strategy": "real",
        "spec": dataclasses.asdict(model.spec), "weights": "model.safetensors",
        "tokenizer": {"kind": "clip-bpe", "vocabulary": VOCAB,
                      "context_length": model.spec.context_length}, "training_config": {}}))
    (root / "README.md").write_text("# a model card\n")
    return root


def _config(**values):
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(values)
        (folder / "config.json").write_text(json.dumps(config))
    return change


def _write(name: str, data):
    def change(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data() if callable(data) else data)
    return change


def _evil() -> bytes:
    return pickle.dumps(Evil())


def _torch_save() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "evil": Evil()}, buffer)
    return buffer.getvalue()


def _clipseg_weights(folder: Path) -> None:
    save_model(build_model("clipseg", "tiny"), str(folder / "model.safetensors"))


def _one_shape(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    state["backbone.ln_final.bias"] = torch.zeros(3, 1)
    save_file(state, str(folder / "model.safetensors"))


CODE_FILE = "a model folder is read only from safetensors, JSON and the tokenizer's vocabulary"

# what is damaged -> the file the error names (relative to the folder), and what it says
CASES = {
    "a pickle beside the weights": (_write("extra.pkl", _evil), "extra.pkl",
                                    f"a .pkl file: {CODE_FILE}"),
    "a pickle under another name": (_write("notes.dat", _evil), "notes.dat",
                                    f"a pickle (by its first bytes): {CODE_FILE}"),
    "pytorch_model.bin": (_write("pytorch_model.bin", _torch_save), "pytorch_model.bin",
                          f"a .bin file: {CODE_FILE}"),
    "a .pt in a subfolder": (_write("extra/state.pt", _torch_save), "extra/state.pt",
                             "a .pt file"),
    "a .ckpt": (_write("last.ckpt", b"anything"), "last.ckpt", "a .ckpt file"),
    "torch.save'd zip renamed": (_write("weights.data", _torch_save), "weights.data",
                                 "a zip archive (torch.save's format, by its first bytes)"),
    "weights file a pickle": (_write("model.safetensors", _evil), "model.safetensors",
                              "a pickle (by its first bytes)"),
    "weights file junk": (_write("model.safetensors", b"\x10" * 64), "model.safetensors",
                          "not a safetensors file (header length"),
    "weights file missing": (lambda f: (f / "model.safetensors").unlink(), "model.safetensors",
                             "missing; the model folder is incomplete"),
    "unknown model": (_config(model="segformer"), "config.json",
                      "model 'segformer' unknown; expected one of ['clipseg', 'cris', 'unet']"),
    "unknown size": (_config(size="huge"), "config.json",
                     "size 'huge' unknown; expected one of ['paper', 'tiny']"),
    "unknown encoders": (_config(encoders="half"), "config.json", "encoders 'half' unknown"),
    "weights outside the folder": (_config(weights="../other/model.safetensors"), "config.json",
                                   "weights '../other/model.safetensors': expected a file "
                                   "name inside the folder ending in .safetensors"),
    "weights named .bin": (_config(weights="pytorch_model.bin"), "config.json",
                           "weights 'pytorch_model.bin': expected a file name"),
    "vocabulary outside the folder": (
        _config(tokenizer={"vocabulary": "/etc/vocab.txt.gz"}), "config.json",
        "vocabulary '/etc/vocab.txt.gz': expected a file name inside the folder"),
    "config.json not JSON": (_write("config.json", b"{not json"), "config.json",
                             "not valid JSON"),
    "config.json a list": (_write("config.json", b"[1, 2]"), "config.json",
                           "a JSON list, not an object"),
    "config.json huge": (_write("config.json", b" " * (5 << 20)), "config.json",
                         "a model's config.json is at most"),
    "weights of another model": (_clipseg_weights, "model.safetensors",
                                 "state dict does not match the model"),
    "one tensor of another shape": (_one_shape, "model.safetensors",
                                    "shapes differ (weights of another model or size?): "
                                    "backbone.ln_final.bias: file (3, 1) vs model (64,)"),
    "vocabulary not gzip": (_write(VOCAB, b"\x00junk" * 1000), VOCAB,
                            "not a gzipped vocabulary"),
    "vocabulary a pickle": (_write(VOCAB, _evil), VOCAB, "a pickle (by its first bytes)"),
    "vocabulary of junk text": (_write(VOCAB, lambda: gzip.compress(b"hello world\n" * 10)),
                                VOCAB, "vocabulary of 11 lines; CLIP's tokenizer reads 48894 "
                                       "merges"),
    "vocabulary not text": (_write(VOCAB, lambda: gzip.compress(b"#v\n" + b"\xff\xfe" * 99)),
                            VOCAB, "vocabulary is not UTF-8 text"),
    "vocabulary malformed merges": (
        _write(VOCAB, lambda: gzip.compress(b"#v\n" + b"a b c\n" * 49000)), VOCAB,
        "line 2 of the vocabulary is not a merge of two symbols: 'a b c'"),
    "vocabulary huge once decompressed": (
        _write(VOCAB, lambda: gzip.compress(b"a b\n" * (5 << 20))), VOCAB,
        "vocabulary of more than 16777216 bytes once decompressed"),
    "vocabulary huge on disk": (_write(VOCAB, lambda: os.urandom(1024) * (17 << 10)), VOCAB,
                                "vocabulary of 17825792 bytes; at most 16777216 expected"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_folder_table(case, intact, tmp_path, monkeypatch):
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("ECHO_VLSM_TEST_MARKER", str(marker))
    folder = tmp_path / "model"
    shutil.copytree(intact, folder)
    change, name, says = CASES[case]
    change(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        inference.load_model(folder, device="cpu").model.tokenize(["Left ventricle."])
    assert str(err.value).startswith(f"{folder / name}: "), str(err.value)
    assert says in str(err.value)
    assert not marker.exists(), "a pickle from the folder was unpickled"


def test_the_intact_folder_loads_and_the_marker_works(intact, tmp_path, monkeypatch):
    """The control: the undamaged folder segments, and the pickle does run code when it is
    unpickled (so the table's ``not marker.exists()`` can fail)."""
    loaded = inference.load_model(intact, device="cpu")
    ids, mask = loaded.model.tokenize(["Left ventricle."])
    assert loaded.kind == "exported" and int(mask.sum()) > 2
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("ECHO_VLSM_TEST_MARKER", str(marker))
    pickle.loads(_evil())
    assert marker.exists()


def test_build_model_from_the_folder_refuses_the_same(intact, tmp_path, monkeypatch):
    """``build_model(..., pretrained=folder)`` goes through the same checks."""
    monkeypatch.setenv("ECHO_VLSM_TEST_MARKER", str(tmp_path / "unpickled"))
    folder = tmp_path / "model"
    shutil.copytree(intact, folder)
    _write("pytorch_model.bin", _torch_save)(folder)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: a \.bin file"):
        build_model("cris", "tiny", pretrained=folder)
    assert not (tmp_path / "unpickled").exists()
