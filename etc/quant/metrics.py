"""PSNR and SSIM on the Y channel, following the BasicSR convention used by the ETDS/ABPN/ECBSR papers.

Both images are uint8-valued RGB (H, W, 3) arrays (float arrays are rounded to uint8 first, as BasicSR's
``tensor2img`` does). Y is ITU-R BT.601 luma on the [16, 235] scale, computed in float64::

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255        (R, G, B in [0, 255])

``crop`` pixels are removed from every side (the scale factor, by convention). PSNR uses peak 255:
``10 log10(255² / MSE)``. SSIM is Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), C1 = (0.01·255)²,
C2 = (0.03·255)², averaged over the 'valid' region (5 more pixels cropped on each side), as BasicSR's
``_ssim`` computes it with ``cv2.filter2D``.
"""

from __future__ import annotations

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (or already uint8) as uint8, rounded half-to-even like numpy's round."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def chw_to_hwc(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) -> (H, W, 3)."""
    arr = np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0]
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8-valued RGB (H, W, 3) -> Y on [16, 235] as float64; a 2-D image is taken as Y already."""
    arr = to_uint8(image).astype(np.float64)
    if arr.ndim == 2:
        return arr
    return arr @ _Y_WEIGHTS / 255.0 + 16.0


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return y
    if y.shape[0] <= 2 * border or y.shape[1] <= 2 * border:
        raise ValueError(f"image {y.shape[:2]} is too small for a {border}-pixel border crop")
    return y[border:-border, border:-border]


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int = 0) -> float:
    """PSNR in dB between the Y channels of two RGB images, ``crop`` border pixels removed."""
    a, b = _crop(rgb_to_y(sr), crop), _crop(rgb_to_y(hr), crop)
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


SSIM_WINDOW = 11


def smallest_hr(scale: int) -> int:
    """The smallest HR side (a multiple of ``scale``) whose Y channel, less the ``scale``-pixel border crop,
    still holds one SSIM window."""
    need = SSIM_WINDOW + 2 * scale
    return -(-need // scale) * scale


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    from scipy.signal import correlate2d

    return correlate2d(image, window, mode="valid")


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int = 0) -> float:
    """SSIM between the Y channels of two RGB images, ``crop`` border pixels removed (BasicSR's ``_ssim``)."""
    a, b = _crop(rgb_to_y(sr), crop), _crop(rgb_to_y(hr), crop)
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape} vs {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"image {a.shape} is too small for an 11x11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _gaussian_window()
    mu1, mu2 = _filter_valid(a, w), _filter_valid(b, w)
    s11 = _filter_valid(a * a, w) - mu1**2
    s22 = _filter_valid(b * b, w) - mu2**2
    s12 = _filter_valid(a * b, w) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())
