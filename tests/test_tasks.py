"""Task files on an exported phantom dataset: schema, prompts, shapes, reproducibility, the
synthetic variant, the VQA backend, and every error of writing and reading."""

import json
import shutil

import numpy as np
import pytest
from tiny_vqa import write_tiny_vilt

from echo_vlsm.data.export import read_records, write_records
from echo_vlsm.io import read_png, write_png
from echo_vlsm.prompts import (
    PROMPT_KEYS,
    SHAPES,
    Attributes,
    TaskFileError,
    make_prompts,
    pick_prompt,
    read_tasks,
    shape_of,
    write_tasks,
)
from echo_vlsm.prompts import vqa as vqa_mod
from echo_vlsm.structures import STRUCTURES


@pytest.fixture
def dataset(exported_dataset, tmp_path):
    """A writable copy of the session's exported phantom (task files go into it)."""
    return shutil.copytree(exported_dataset, tmp_path / "phantom")


def make_synthetic(dataset):
    """The same images as a synthetic set: no quality, a source_stem per record."""
    records = read_records(dataset)
    records["source_stem"] = records["stem"]
    records["quality"] = ""
    write_records(records, dataset)
    return dataset


def test_write_tasks_schema_and_prompts(dataset):
    paths = write_tasks(dataset, "camus")
    records = read_records(dataset)
    splits = [s for s in ("train", "val", "test") if (records["split"] == s).any()]
    assert list(paths) == splits and splits == ["train", "val", "test"]
    by_stem = records.set_index("stem")
    for split, path in paths.items():
        assert path == dataset / "tasks" / f"{split}.json"
        tasks = json.loads(path.read_text())
        n_images = int((records["split"] == split).sum())
        assert len(tasks) == 3 * n_images
        keys = [(t["img_name"], t["structure"]) for t in tasks]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for t in tasks:
            assert set(t) == {"img_name", "mask_name", "structure", "attributes", "prompts"}
            a = t["attributes"]
            stem, structure = a["stem"], t["structure"]
            assert t["img_name"] == f"images/{split}/{stem}.png"
            assert t["mask_name"] == f"masks/{structure}/{split}/{stem}.png"
            assert (dataset / t["img_name"]).is_file() and (dataset / t["mask_name"]).is_file()
            row = by_stem.loc[stem]
            assert (a["structure"], a["view"], a["phase"]) == (structure, row["view"], row["phase"])
            assert (a["sex"], a["age"], a["quality"]) == (
                row["sex"],
                int(row["age"]),
                row["quality"],
            )
            assert a["shape"] in SHAPES
            mask = read_png(dataset / t["mask_name"])
            assert a["shape"] == shape_of(mask, structure=structure)  # myo: outer outline
            attrs = Attributes(**{k: v for k, v in a.items() if k != "stem"})
            assert t["prompts"] == make_prompts(attrs, "camus")
            assert list(t["prompts"]) == list(PROMPT_KEYS)
    myo = [t["attributes"]["shape"] for path in paths.values()
           for t in json.loads(path.read_text()) if t["structure"] == "myo"]
    assert len(set(myo)) > 1  # the wall's outer shape, not one arbitrary word for every U
    # the study's P7 wording appears with the phantom's attributes
    t = json.loads(paths["train"].read_text())[0]
    assert t["prompts"]["p7"][0].startswith(
        f"Left atrium cavity of {t['attributes']['shape']} shape in "
    )


def test_write_tasks_is_reproducible_and_does_not_touch_unchanged_files(dataset):
    paths = write_tasks(dataset, "camus")
    before = {s: (p.read_bytes(), p.stat().st_mtime_ns) for s, p in paths.items()}
    write_tasks(dataset, "auto")  # auto: a real set (quality present) -> camus
    assert {s: (p.read_bytes(), p.stat().st_mtime_ns) for s, p in paths.items()} == before
    shutil.rmtree(dataset / "tasks")
    again = write_tasks(dataset, "camus")
    assert {s: p.read_bytes() for s, p in again.items()} == {s: b for s, (b, _) in before.items()}
    assert not list((dataset / "tasks").glob(".*.tmp"))  # atomic writes leave nothing behind


def test_read_tasks_round_trip_and_pick(dataset):
    paths = write_tasks(dataset, "camus", splits=["val"])
    assert list(paths) == ["val"] and not (dataset / "tasks" / "train.json").exists()
    tasks = read_tasks(dataset, "val")
    assert tasks == json.loads(paths["val"].read_text())
    assert read_tasks(paths["val"]) == tasks  # a task file given directly
    rng = np.random.default_rng(0)
    assert pick_prompt(tasks[0], "p6", rng) in tasks[0]["prompts"]["p6"]


def test_synthetic_set_gets_synthetic_prompts(dataset):
    make_synthetic(dataset)
    paths = write_tasks(dataset, "auto")
    tasks = read_tasks(dataset, "train")
    assert paths["train"].is_file()
    for t in tasks:
        a = t["attributes"]
        assert a["quality"] is None
        assert list(t["prompts"]) == list(PROMPT_KEYS[:-1])  # no p7
        assert t["prompts"]["p6"][0].startswith(f"{_name(t['structure'])} of {a['shape']} shape in")
        assert "image quality" not in t["prompts"]["p6"][0]
    assert write_tasks(dataset, "synthetic")["train"].read_bytes() == paths["train"].read_bytes()
    with pytest.raises(ValueError, match="no prompt 'p7'"):
        pick_prompt(tasks[0], "p7", np.random.default_rng(0))


def _name(structure):
    return {"lv": "Left ventricular cavity", "myo": "Myocardium", "la": "Left atrium cavity"}[
        structure
    ]


def test_camus_kind_on_a_set_without_quality_is_an_error(dataset):
    make_synthetic(dataset)
    with pytest.raises(ValueError) as err:
        write_tasks(dataset, "camus")
    msg = str(err.value)
    assert "records.csv" in msg and "record 'patient" in msg and "'quality'" in msg
    assert "kind='synthetic'" in msg


def test_missing_sex_names_record_and_prompt(dataset):
    records = read_records(dataset)
    stem = records["stem"].iloc[0]
    records.loc[0, "sex"] = ""
    write_records(records, dataset)
    with pytest.raises(ValueError, match=rf"records.csv: record '{stem}': prompt p4 .*'sex'"):
        write_tasks(dataset, "camus")


def test_missing_and_empty_masks(dataset):
    records = read_records(dataset)
    row = records.iloc[0]
    mask = dataset / "masks" / "la" / row["split"] / f"{row['stem']}.png"
    empty = np.zeros_like(read_png(mask))
    write_png(mask, empty)
    with pytest.raises(ValueError, match=rf"{mask.name}: empty mask .*on_empty='skip'"):
        write_tasks(dataset, "camus")
    with pytest.warns(UserWarning, match="left 1 empty mask"):
        paths = write_tasks(dataset, "camus", on_empty="skip")
    tasks = read_tasks(dataset, row["split"])
    names = {t["mask_name"] for t in tasks}
    assert f"masks/la/{row['split']}/{row['stem']}.png" not in names
    assert f"masks/lv/{row['split']}/{row['stem']}.png" in names
    assert len(tasks) == 3 * int((records["split"] == row["split"]).sum()) - 1
    assert paths[row["split"]].is_file()
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{mask.name}: mask missing .*records.csv"):
        write_tasks(dataset, "camus")


def test_write_tasks_argument_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"unknown task kind 'real'.*'auto'"):
        write_tasks(dataset, "real")
    with pytest.raises(ValueError, match=r"unknown shape_backend 'ofa'"):
        write_tasks(dataset, "camus", shape_backend="ofa")
    with pytest.raises(TypeError, match=r"takes shape_backend="):
        write_tasks(dataset, "camus", backend="geometry")
    with pytest.raises(ValueError, match="on_empty='drop'"):
        write_tasks(dataset, "camus", on_empty="drop")
    with pytest.raises(ValueError, match="needs model="):
        write_tasks(dataset, "camus", shape_backend="vqa")
    with pytest.raises(ValueError, match=r"no records for split\(s\) \['tset'\]"):
        write_tasks(dataset, "camus", splits=["tset"])
    with pytest.raises(FileNotFoundError, match="records.csv"):
        write_tasks(tmp_path / "nothing-here", "camus")
    assert not (dataset / "tasks").exists()


def test_read_tasks_errors(tmp_path):
    tasks_dir = tmp_path / "tasks"
    with pytest.raises(FileNotFoundError, match=r"train.json: no task file .*write_tasks"):
        read_tasks(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split 'training'"):
        read_tasks(tmp_path, "training")
    with pytest.raises(TaskFileError, match="give split="):
        read_tasks(tmp_path)
    tasks_dir.mkdir()
    path = tasks_dir / "train.json"
    good = {"img_name": "images/train/a.png", "mask_name": "masks/lv/train/a.png",
            "prompts": {"p0": "", "p1": ["A.", "B."]}}
    cases = [
        ("[{", "not valid JSON"),
        ('{"img_name": 1}', "expected a JSON list of tasks, got dict"),
        ("[1]", "task 0 is a int, not an object"),
        (json.dumps([good, {"img_name": "x"}]), r"task 1 lacks \['mask_name', 'prompts'\]"),
        (json.dumps([{**good, "prompts": ["A."]}]), "'prompts' must be an object"),
        (json.dumps([{**good, "prompts": {"p9": "A."}}]), "unknown prompt key 'p9'"),
        (json.dumps([{**good, "prompts": {"p1": [1, 2]}}]), "prompt 'p1' must be a string"),
        (json.dumps([{**good, "prompts": {"p1": []}}]), "prompt 'p1' must be a string"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(TaskFileError, match=message) as err:
            read_tasks(tmp_path, "train")
        assert str(path) in str(err.value)
    path.write_bytes(b"\xff\xfe[")
    with pytest.raises(TaskFileError, match="not UTF-8"):
        read_tasks(path)
    path.write_text(json.dumps([good]))
    assert read_tasks(tmp_path, "train") == [good]  # the study's files (no attributes) read too


def test_vqa_backend_writes_and_caches(dataset, tmp_path, monkeypatch):
    labels = ["circle", "oval", "triangle", "square", "rectangle", "heart"]
    model = write_tiny_vilt(tmp_path / "tiny-vilt", labels)
    vqa_mod.load_vqa.cache_clear()
    paths = write_tasks(dataset, "camus", shape_backend="vqa", vqa_model=model, splits=["test"])
    tasks = read_tasks(dataset, "test")
    assert {t["attributes"]["shape"] for t in tasks} <= set(labels)
    cached = list((dataset / ".cache" / "vqa").rglob("*.json"))
    assert len(cached) == len(tasks) == 3 * len({t["img_name"] for t in tasks})
    first = paths["test"].read_bytes()

    def no_model(*args, **kwargs):
        raise AssertionError("every answer should come from the cache")

    monkeypatch.setattr(vqa_mod, "load_vqa", no_model)
    shutil.rmtree(dataset / "tasks")
    assert write_tasks(dataset, "camus", shape_backend="vqa", vqa_model=model,
                       splits=["test"])["test"].read_bytes() == first
    assert set(STRUCTURES) == {t["structure"] for t in tasks}


def test_viz_tables_count_tokens_and_shapes(dataset):
    import matplotlib

    matplotlib.use("Agg")
    from echo_vlsm.prompts import viz

    write_tasks(dataset, "camus", splits=["val"])
    tasks = {"camus": read_tasks(dataset, "val")}
    n = len(tasks["camus"])
    words = lambda texts: [len(t.split()) + 2 for t in texts]  # noqa: E731 - a stand-in tokenizer
    lengths = viz.token_length_table(tasks, words)
    assert len(lengths) == n * 15  # p0 once, p1..p7 twice
    summary = viz.truncation_summary(lengths, limit=20).set_index("key")
    assert summary.loc["p7", "over_20"] == 2 * n  # every P7 is longer than 18 words
    assert summary.loc["p1", "over_20"] == 0 and summary.loc["p0", "max_tokens"] == 2
    shapes = viz.shape_table(tasks)
    assert set(shapes["split"]) == {"val"} and len(shapes) == n
    counts = viz.shape_counts(shapes)
    assert int(counts.to_numpy().sum()) == n and set(counts.columns) <= set(SHAPES)
    frame = viz.prompt_frame(tasks["camus"][0]["prompts"])
    assert frame.shape == (8, 2) and frame.loc["p0"].tolist() == ["", ""]
    examples = viz.prompt_examples(tasks, structure="myo")
    assert examples.shape == (8, 1) and examples.iloc[1, 0] == "Myocardium of the heart."
    assert len(viz.plot_token_lengths(lengths).axes) == 1
    assert len(viz.plot_shapes(shapes).axes) == 3
