"""Image sets for calibration and evaluation: DIV2K-style folders, benchmark folders and bundled photos.

Layouts understood (``S`` is the scale, names are case-sensitive as published):

* official DIV2K: ``ROOT/DIV2K_train_HR/0001.png`` and ``ROOT/DIV2K_train_LR_bicubic/X{S}/0001x{S}.png``
  (``valid`` instead of ``train`` also works);
* BasicSR / ETDS: ``ROOT/train/HR/*.png`` and ``ROOT/train/LR/bicubic/X{S}/*.png`` (e.g. ``datasets/DIV2K``),
  and benchmark sets ``ROOT/HR`` with ``ROOT/LR/bicubic/X{S}`` (or ``GTmod12`` with ``LRbicx{S}``);
* an HR-only folder of images: LR is made by bicubic downscaling (below);
* ``samples``: real photos bundled with scikit-image (no download). Calibration and evaluation use disjoint
  photos: :data:`EVAL_PHOTOS` are evaluated, :data:`CALIB_PHOTOS` calibrate.

A bare name such as ``DIV2K`` or ``Set5`` is looked up under ``$ETC_DATA`` and then ``./datasets`` (and their
``benchmark`` subfolders). LR/HR files pair by name: ``0001x4.png`` and ``0001.png`` are one pair.

Bicubic downscaling: PIL's ``Image.resize(..., Image.BICUBIC)`` on the uint8 HR image, which uses Keys' cubic
kernel (a = -0.5) widened by the scale factor (antialiased), like MATLAB's ``imresize``; results differ from
MATLAB by at most a few grey levels. HR images are first cropped to a multiple of S (top-left kept).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etc.errors import EtcError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EVAL_PHOTOS: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "rocket")
CALIB_PHOTOS: tuple[str, ...] = (
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "coins",
    "moon",
    "grass",
    "gravel",
    "brick",
    "clock",
)
DATA_ENV = "ETC_DATA"
DIV2K_HELP = (
    "get DIV2K from https://data.vision.ee.ethz.ch/cvl/DIV2K/ (DIV2K_train_HR.zip and "
    "DIV2K_train_LR_bicubic_X{S}.zip) and unpack both into $ETC_DATA/DIV2K, or pass a folder of images, "
    "or use 'samples' (photos bundled with scikit-image)"
)


class DataError(EtcError):
    """An image folder is missing, empty, unreadable or does not match the scale."""


@dataclass
class ImagePair:
    """One evaluation/calibration image: uint8 RGB (H, W, 3) HR (may be None) and LR arrays."""

    name: str
    lr: np.ndarray
    hr: np.ndarray | None = None


# ---------------------------------------------------------------- image helpers


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); grey and RGBA are converted; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({str(exc).splitlines()[0][:120]})") from None


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W), RGB or RGBA -> uint8 RGB (H, W, 3)."""
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """uint8 RGB HR (cropped to a multiple of ``scale``) -> uint8 LR with PIL's antialiased bicubic."""
    from PIL import Image

    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise DataError(f"image {w}x{h} is smaller than the scale {scale}")
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC), dtype=np.uint8)


def to_nchw(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (1, 3, H, W) in [0, 1]."""
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def pair_from_hr(name: str, hr: np.ndarray, scale: int) -> ImagePair:
    hr = crop_to_multiple(to_rgb(hr), scale)
    return ImagePair(name, bicubic_downscale(hr, scale), hr)


# ---------------------------------------------------------------- bundled photos


def sample_photos(names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB) for scikit-image's bundled photos (grey ones repeated to RGB)."""
    from skimage import data

    return [(name, to_rgb(getattr(data, name)())) for name in names]


def sample_pairs(scale: int, purpose: str = "eval") -> list[ImagePair]:
    """HR/LR pairs of the bundled photos; ``purpose`` 'eval' or 'calib' picks the disjoint subset."""
    names = EVAL_PHOTOS if purpose == "eval" else CALIB_PHOTOS
    return [pair_from_hr(name, img, scale) for name, img in sample_photos(names)]


# ---------------------------------------------------------------- folders


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def search_roots(name: str) -> list[Path]:
    """Where a bare dataset name is looked up, in order."""
    bases = []
    env = os.environ.get(DATA_ENV)
    if env:
        bases.append(Path(env).expanduser())
    bases.append(Path.cwd() / "datasets")
    out = []
    for base in bases:
        out += [base / name, base / "benchmark" / name]
    return out


def resolve_dataset(spec: str | os.PathLike) -> Path:
    """A folder path, or a bare name found under $ETC_DATA then ./datasets; DataError says where it looked."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"{path}: is a file, expected a folder of images")
    text = str(spec)
    if os.sep in text or "/" in text:
        raise DataError(f"{path}: no such folder")
    tried = search_roots(text)
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    where = ", ".join(str(p) for p in tried)
    hint = (
        DIV2K_HELP.replace("{S}", "4") if "div2k" in text.lower() else "pass a folder of images or 'samples'"
    )
    raise DataError(f"dataset '{text}' not found (looked in {where}); {hint}")


@dataclass
class Layout:
    """Where the HR and LR images of a dataset are; ``lr`` None means LR is made by bicubic downscaling."""

    kind: str
    hr: Path | None
    lr: Path | None


def _lr_dirs(root: Path, scale: int) -> list[tuple[str, Path, Path | None]]:
    """Candidate (kind, lr folder, hr folder) for every known layout under ``root``."""
    x = f"X{scale}"
    out: list[tuple[str, Path, Path | None]] = []
    for split in ("train", "valid"):
        out.append(
            ("DIV2K", root / f"DIV2K_{split}_LR_bicubic" / x, root / f"DIV2K_{split}_HR"),
        )
    for split in ("train", "val", "valid", "test", ""):
        base = root / split if split else root
        out.append(("BasicSR", base / "LR" / "bicubic" / x, base / "HR"))
    out.append(("BasicSR", root / f"LRbicx{scale}", root / "GTmod12"))
    out.append(("BasicSR", root / f"LRbicx{scale}", root / "HR"))
    return out


def _scale_dirs(root: Path) -> list[str]:
    """Every X{n} folder name below root (two levels deep), to explain a wrong scale."""
    found = set()
    for depth in ("*/X*", "*/*/X*", "*/*/*/X*", "LRbicx*"):
        found.update(p.name for p in root.glob(depth) if p.is_dir())
    return sorted(found)


def detect_layout(root: Path, scale: int) -> Layout:
    """Which layout ``root`` follows for ``scale``; DataError when LR folders exist for other scales only."""
    for kind, lr, hr in _lr_dirs(root, scale):
        if lr.is_dir():
            return Layout(kind, hr if hr is not None and hr.is_dir() else None, lr)
    for kind, hr in (
        ("DIV2K HR-only", root / "DIV2K_train_HR"),
        ("DIV2K HR-only", root / "DIV2K_valid_HR"),
        ("BasicSR HR-only", root / "train" / "HR"),
        ("BasicSR HR-only", root / "HR"),
        ("BasicSR HR-only", root / "GTmod12"),
    ):
        if hr.is_dir():
            return Layout(kind, hr, None)
    others = _scale_dirs(root)
    if others:
        raise DataError(
            f"{root}: no LR folder for scale x{scale} (found {', '.join(others)}); pass the matching --scale "
            "or add the HR images so LR can be made by bicubic downscaling"
        )
    return Layout("HR-only", root, None)


def _stem_key(path: Path, scale: int) -> str:
    stem = path.stem
    for suffix in (f"x{scale}", f"X{scale}", f"_x{scale}", f"_LRBI_x{scale}"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)].rstrip("_")
    return stem


def _check_pair(name: str, lr: np.ndarray, hr: np.ndarray, scale: int) -> np.ndarray:
    """HR cropped to S x the LR size; DataError when the sizes say another scale."""
    lh, lw = lr.shape[:2]
    hh, hw = hr.shape[:2]
    if hh // lh != scale or hw // lw != scale or hh < lh * scale or hw < lw * scale:
        ratio = f"{hh / lh:.2f}x{hw / lw:.2f}"
        raise DataError(
            f"{name}: HR {hw}x{hh} is not {scale}x the LR {lw}x{lh} (ratio {ratio}); wrong --scale?"
        )
    return hr[: lh * scale, : lw * scale]


def iter_folder(root: Path, scale: int, *, need_hr: bool, limit: int | None = None) -> Iterator[ImagePair]:
    """Pairs (or LR only when ``need_hr`` is False and the layout has LR images) from a dataset folder."""
    layout = detect_layout(root, scale)
    if layout.lr is not None:
        lr_files = list_images(layout.lr)
        if not lr_files:
            raise DataError(f"{layout.lr}: no images ({'/'.join(IMAGE_SUFFIXES)}) found")
        hr_files = {_stem_key(p, scale): p for p in list_images(layout.hr)} if layout.hr else {}
        if need_hr and not hr_files:
            raise DataError(f"{root}: LR images found in {layout.lr} but no HR folder next to them")
        for path in lr_files[:limit]:
            key = _stem_key(path, scale)
            lr = read_image(path)
            if not need_hr:
                yield ImagePair(key, lr, None)
                continue
            if key not in hr_files:
                raise DataError(f"{path}: no HR image named {key}.* in {layout.hr}")
            yield ImagePair(key, lr, _check_pair(key, lr, read_image(hr_files[key]), scale))
        return
    assert layout.hr is not None
    files = list_images(layout.hr)
    if not files:
        raise DataError(f"{layout.hr}: no images ({'/'.join(IMAGE_SUFFIXES)}) found")
    for path in files[:limit]:
        yield pair_from_hr(path.stem, read_image(path), scale)


def load_pairs(
    spec: str | os.PathLike, scale: int, *, purpose: str = "eval", limit: int | None = None
) -> list[ImagePair]:
    """Image pairs from ``samples``, a dataset name or a folder (see the module docstring)."""
    if scale < 1:
        raise DataError(f"scale must be a positive integer, got {scale}")
    if str(spec) == "samples":
        return sample_pairs(scale, purpose)[:limit]
    root = resolve_dataset(spec)
    return list(iter_folder(root, scale, need_hr=purpose == "eval", limit=limit))


# ---------------------------------------------------------------- calibration patches


def calibration_patches(
    spec: str | os.PathLike, scale: int, *, num: int = 32, patch: int = 96, seed: int = 0
) -> list[np.ndarray]:
    """``num`` float32 (1, 3, P, P) LR patches in [0, 1], seeded random crops spread over the images.

    An image smaller than the patch is a DataError giving the smallest size accepted. Folders are read
    lazily: at most ``num`` images.
    """
    if num < 1:
        raise DataError(f"--num must be at least 1, got {num}")
    if patch < 4:
        raise DataError(f"--patch must be at least 4 pixels, got {patch}")
    pairs = load_pairs(spec, scale, purpose="calib", limit=num)
    if not pairs:
        raise DataError(f"{spec}: no calibration images")
    for pair in pairs:
        check_patch_fits(pair, patch, scale, spec)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        lr = pairs[i % len(pairs)].lr
        h, w = lr.shape[:2]
        ph, pw = min(patch, h), min(patch, w)
        top = int(rng.integers(0, h - ph + 1))
        left = int(rng.integers(0, w - pw + 1))
        out.append(to_nchw(lr[top : top + ph, left : left + pw]))
    return out


def check_patch_fits(pair: ImagePair, patch: int, scale: int, spec: object) -> None:
    """DataError when ``pair``'s LR image is smaller than a ``patch`` x ``patch`` crop, giving the smallest size."""
    h, w = pair.lr.shape[:2]
    if h >= patch and w >= patch:
        return
    raise DataError(
        f"{spec}: image '{pair.name}' is {w}x{h} at LR (x{scale}); calibration patches of {patch} LR pixels "
        f"need images of at least {patch}x{patch} LR ({patch * scale}x{patch * scale} HR) pixels; pass a "
        "smaller --patch or larger images"
    )
