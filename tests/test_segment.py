"""``echo_vlsm.segment`` and ``echo-vlsm segment`` on a demo-size run trained here."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tiny_runs import train_tiny_run

from echo_vlsm import inference
from echo_vlsm.cli import main
from echo_vlsm.io import read_png


@pytest.fixture(scope="module")
def run(task_dataset, tmp_path_factory):
    return train_tiny_run(task_dataset, tmp_path_factory.mktemp("runs"), prompt="p1")


def _evaluated_predictions(run, tmp_path):
    """``evaluate`` of the run with its test predictions saved, in a copy of the run folder;
    per test triplet (image path, the phrasing evaluate used, its predicted mask)."""
    from echo_vlsm.train import eval_generator, evaluate, load_split

    copy_root = tmp_path / "runs-copy"
    shutil.copytree(run.run_dir, copy_root / run.run_dir.name)
    config = run.config.replace(runs_root=str(copy_root))
    metrics = evaluate(config, device="cpu", save_predictions=True, progress=False)
    loaded = inference.load_model(config.run_dir, device="cpu")
    data = load_split(config, loaded.model, config.test_dir, "test", torch.device("cpu"),
                      progress=False)
    phrasing = data.draw_phrasings(eval_generator(config))
    out = []
    for i, s in enumerate(data.samples):
        pred = read_png(config.run_dir / "predictions" / s["structure"] / f"{s['sample']}.png")
        out.append((config.test_dir / s["img_name"], data.prompt_text(i, phrasing), pred > 0))
    assert len(out) == len(metrics) > 0
    return out


def test_cli_mask_equals_the_mask_evaluate_scored(run, tmp_path, capsys):
    triplets = _evaluated_predictions(run, tmp_path)
    assert len({text for _, text, _ in triplets}) >= 2  # several structures / phrasings
    assert any(mask.any() for _, _, mask in triplets)  # not only empty masks
    for k, (image, text, expected) in enumerate(triplets):
        out = tmp_path / f"cli{k}"
        assert main(["segment", str(run.run_dir), str(image), "--prompt", text,
                     "--out", str(out), "--device", "cpu"]) == 0
        mask = read_png(out / f"{image.stem}_mask.png")
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert mask.shape == expected.shape
        np.testing.assert_array_equal(mask > 0, expected, err_msg=f"{image} / {text!r}")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(triplets[-1][0]) in line and "_mask.png" in line and "prompt" in line


def test_several_prompts_in_one_batch_match_one_by_one(run, task_dataset):
    image = sorted((task_dataset / "images" / "test").glob("*.png"))[0]
    texts = ["Left ventricular cavity of the heart.", "Myocardium of the heart.",
             "Left atrium cavity of the heart."]
    batch = inference.segment(run.run_dir, image, texts, device="cpu")
    assert [r.prompt for r in batch] == texts
    for r in batch:
        single = inference.segment(run.run_dir, image, r.prompt, device="cpu")
        assert r.probability.shape == r.mask.shape == read_png(image).shape
        assert r.probability.dtype == np.float32 and r.mask.dtype == bool
        assert 0 <= r.probability.min() and r.probability.max() <= 1
        np.testing.assert_allclose(r.probability, single.probability, atol=1e-5)
        # the mask is the probability at the model's threshold (up to rounding at the cut)
        near = np.abs(r.probability - r.threshold) < 1e-6
        assert np.array_equal(r.mask[~near], (r.probability > r.threshold)[~near])


def test_prompt_key_with_attributes_gives_the_study_text(run, task_dataset):
    image = sorted((task_dataset / "images" / "test").glob("*.png"))[0]
    attrs = {"structure": "myo", "view": "2CH", "phase": "ED"}
    r0 = inference.segment(run.run_dir, image, "p1", attributes=attrs, device="cpu")
    r1 = inference.segment(run.run_dir, image, "p1", attributes=attrs, phrasing=1, device="cpu")
    assert r0.prompt == "Myocardium of the heart."
    assert r1.prompt == "Myocardium in the cardiac ultrasound."
    p3 = inference.prompt_text("p3", attrs)
    assert "two-chamber" in p3.lower() and "diastole" in p3.lower()


def test_image_formats_give_the_same_mask(run, task_dataset, tmp_path):
    import cv2
    import SimpleITK as sitk

    png = sorted((task_dataset / "images" / "test").glob("*.png"))[0]
    gray = read_png(png)
    text = "Left ventricular cavity of the heart."
    ref = inference.segment(run.run_dir, png, text, device="cpu").mask
    nii = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(gray), str(nii))
    rgb = tmp_path / "scan_rgb.png"
    cv2.imwrite(str(rgb), np.repeat(gray[..., None], 3, axis=2))
    for source in (nii, rgb, gray, gray.astype(np.float32) / 255):
        got = inference.segment(run.run_dir, source, text, device="cpu").mask
        np.testing.assert_array_equal(got, ref, err_msg=str(type(source)))
    assert inference.stem_of(nii) == "scan"


def test_bad_input_errors_name_the_file(run, tmp_path):
    text = "Left ventricular cavity of the heart."
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    with pytest.raises(inference.ImageError, match="broken.png: cannot decode"):
        inference.segment(run.run_dir, bad, text)
    with pytest.raises(inference.ImageError, match="no such image file"):
        inference.segment(run.run_dir, tmp_path / "missing.png", text)
    with pytest.raises(inference.ImageError, match="expected a 2-D image"):
        inference.segment(run.run_dir, np.zeros((2, 3, 8, 8), np.uint8), text)
    volume = tmp_path / "volume.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 16, 16), np.uint8)), str(volume))
    with pytest.raises(inference.ImageError, match="volume.nii.gz: expected a 2-D image"):
        inference.segment(run.run_dir, volume, text)
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="empty prompt, but this model was trained with "
                                         "prompt 'p1'"):
        inference.segment(run.run_dir, image, "  ")
    with pytest.raises(ValueError, match="needs the image's attributes"):
        inference.segment(run.run_dir, image, "p2")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(run.run_dir, incomplete)
    summary = (incomplete / "summary.json").read_text()
    (incomplete / "summary.json").write_text(json.dumps({"done": False}))
    with pytest.raises(inference.ModelFolderError,
                       match="not a complete run folder: incomplete: summary.json has no done"):
        inference.segment(incomplete, image, text)
    (incomplete / "summary.json").write_text(summary)
    (incomplete / "model.safetensors").unlink()
    with pytest.raises(inference.ModelFolderError, match="missing: model.safetensors"):
        inference.segment(incomplete, image, text)


def test_cli_reports_bad_images_and_writes_overlays(run, task_dataset, tmp_path, capsys):
    good = sorted((task_dataset / "images" / "test").glob("*.png"))[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    code = main(["segment", str(run.run_dir), str(good[0]), str(bad), str(good[1]),
                 "--prompt", "p1", "--attr", "structure=la", "--attr", "view=4CH",
                 "--attr", "phase=ES", "--out", str(out), "--overlay", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # one image failed, the others were written
    assert f"{bad}: cannot decode" in captured.err
    assert captured.out.count("'Left atrium cavity of the heart.'") == 2
    for image in good:
        overlay = out / f"{image.stem}_overlay.png"
        from PIL import Image

        with Image.open(overlay) as im:
            assert im.mode == "RGB" and im.size == read_png(image).shape[::-1]
    assert main(["segment", str(tmp_path / "nowhere"), str(good[0]), "--prompt", "x y"]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_a_zero_shot_run_loads_its_initial_model(run, tmp_path):
    """A zero-shot run keeps no weights of its own: it scored the initial model, which
    load_model builds again from the run's config (same seed, same weights)."""
    import json

    from echo_vlsm.grid import WEIGHTS_FILE, file_records, run_files

    zs = tmp_path / "clipseg_zeroshot_frozen_p1"
    shutil.copytree(run.run_dir, zs)
    config = json.loads((zs / "config.json").read_text())
    config.update(strategy="zeroshot", encoders="frozen", pretrained=None)
    (zs / "config.json").write_text(json.dumps(config))
    (zs / WEIGHTS_FILE).unlink()
    summary = json.loads((zs / "summary.json").read_text())
    summary["files"] = file_records(zs, run_files("zeroshot"))  # as a zero-shot run records
    (zs / "summary.json").write_text(json.dumps(summary))
    a = inference.load_model(zs, device="cpu").model
    b = inference.load_model(zs, device="cpu").model
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
