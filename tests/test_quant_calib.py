"""Calibration/evaluation readers on generated folders of every layout, and their error paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etc.quant import calib
from etc.quant.calib import DataError


def _img(rng, h, w) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _pairs_tree(root: Path, hr_dir: str, lr_dir: str, scale: int, rng, lr_suffix: str) -> None:
    for k in range(3):
        hr = _img(rng, 24, 36)
        _save(root / hr_dir / f"{k:04d}.png", hr)
        _save(root / lr_dir / f"{k:04d}{lr_suffix}.png", calib.bicubic_downscale(hr, scale))


def test_official_div2k_layout(tmp_path, rng):
    _pairs_tree(tmp_path, "DIV2K_train_HR", "DIV2K_train_LR_bicubic/X3", 3, rng, "x3")
    assert calib.detect_layout(tmp_path, 3).kind == "DIV2K"
    pairs = calib.load_pairs(tmp_path, 3)
    assert [p.name for p in pairs] == ["0000", "0001", "0002"]
    assert pairs[0].lr.shape == (8, 12, 3) and pairs[0].hr.shape == (24, 36, 3)
    patches = calib.calibration_patches(tmp_path, 3, num=5, patch=6)
    assert len(patches) == 5 and all(p.shape == (1, 3, 6, 6) for p in patches)
    assert all(p.min() >= 0.0 and p.max() <= 1.0 for p in patches)


def test_basicsr_layout_and_name_lookup(tmp_path, rng, monkeypatch):
    root = tmp_path / "data" / "DIV2K"
    _pairs_tree(root, "train/HR", "train/LR/bicubic/X2", 2, rng, "")
    monkeypatch.setenv("ETC_DATA", str(tmp_path / "data"))
    assert calib.resolve_dataset("DIV2K") == root
    assert calib.detect_layout(root, 2).kind == "BasicSR"
    pairs = calib.load_pairs("DIV2K", 2)
    assert len(pairs) == 3 and pairs[1].hr.shape == (24, 36, 3)


def test_benchmark_layout_gtmod12(tmp_path, rng):
    _pairs_tree(tmp_path, "GTmod12", "LRbicx4", 4, rng, "")
    pairs = calib.load_pairs(tmp_path, 4)
    assert pairs[0].lr.shape == (6, 9, 3)


def test_hr_only_folder_is_downscaled_with_bicubic(tmp_path, rng):
    hr = _img(rng, 25, 31)  # not a multiple of 3: cropped
    _save(tmp_path / "a.png", hr)
    Image.fromarray(hr[:, :, 0]).save(tmp_path / "grey.jpg")
    pairs = calib.load_pairs(tmp_path, 3)
    assert [p.name for p in pairs] == ["a", "grey"]
    assert pairs[0].hr.shape == (24, 30, 3) and pairs[0].lr.shape == (8, 10, 3)
    want = np.asarray(Image.fromarray(hr[:24, :30]).resize((10, 8), Image.BICUBIC))
    np.testing.assert_array_equal(pairs[0].lr, want)


def test_samples_are_real_photos_and_disjoint():
    assert not set(calib.EVAL_PHOTOS) & set(calib.CALIB_PHOTOS)
    pairs = calib.sample_pairs(4, "eval")
    assert [p.name for p in pairs] == list(calib.EVAL_PHOTOS)
    cam = pairs[1]
    assert cam.hr.shape[2] == 3 and np.array_equal(cam.hr[..., 0], cam.hr[..., 1])  # grey -> RGB
    assert all(p.hr.shape[0] % 4 == 0 and p.hr.shape[1] % 4 == 0 for p in pairs)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no images"):
        calib.load_pairs(tmp_path, 2)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        calib.load_pairs(tmp_path, 2)


def test_wrong_scale_folder(tmp_path, rng):
    _pairs_tree(tmp_path, "DIV2K_train_LR_bicubic_dummy", "DIV2K_train_LR_bicubic/X2", 2, rng, "x2")
    with pytest.raises(DataError, match=r"no LR folder for scale x4 \(found X2\)"):
        calib.load_pairs(tmp_path, 4)


def test_wrong_scale_pairs(tmp_path, rng):
    # LR images declared as X3 but really x2 of their HR
    for k in range(2):
        hr = _img(rng, 24, 36)
        _save(tmp_path / "HR" / f"{k}.png", hr)
        _save(tmp_path / "LR/bicubic/X3" / f"{k}.png", calib.bicubic_downscale(hr, 2))
    with pytest.raises(DataError, match="is not 3x the LR"):
        calib.load_pairs(tmp_path, 3)


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("ETC_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        calib.resolve_dataset("DIV2K")
    text = str(info.value)
    assert str(tmp_path / "DIV2K") in text and "datasets" in text and "DIV2K_train_LR_bicubic" in text


def test_bad_numbers():
    with pytest.raises(DataError):
        calib.calibration_patches("samples", 2, num=0)
    with pytest.raises(DataError):
        calib.load_pairs("samples", 0)
