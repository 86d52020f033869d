"""uint8 images in, normalised float planes out: clients send 1 byte per value instead of 4.

`normalize_reference` is the definition (float64 arithmetic, one rounding to the output type).
`normalize_cpu` and the device kernel (preprocess.cu) both read a per-channel table of that same
function evaluated at the 256 possible byte values, so all three agree bit for bit, FP16 included.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

LAYOUTS = ("NHWC", "NCHW")
_THREADS = 256


@dataclass(frozen=True)
class Normalize:
    """The per-channel map v -> (v * scale - mean[c]) / std[c]; `mean`/`std` have one entry or one per channel."""

    layout: str = "NHWC"
    scale: float = 1.0 / 255.0
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got '{self.layout}'")
        if not self.mean or not self.std:
            raise ValueError("mean and std need at least one value")
        if any(s == 0 or not np.isfinite(s) for s in self.std) or not all(np.isfinite(self.mean)):
            raise ValueError("std must be finite and non-zero, mean finite")
        if not np.isfinite(self.scale):
            raise ValueError("scale must be finite")

    def channel_values(self, values: Sequence[float], channels: int, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.size not in (1, channels):
            raise ValueError(f"{what} has {values.size} values; the model has {channels} channels")
        return np.broadcast_to(values, (channels,))

    def table(self, channels: int, dtype) -> np.ndarray:
        """[channels, 256] in `dtype`: the map at every byte value, computed in float64, rounded once."""
        mean = self.channel_values(self.mean, channels, "mean")[:, None]
        std = self.channel_values(self.std, channels, "std")[:, None]
        levels = np.arange(256, dtype=np.float64)[None, :]
        return np.ascontiguousarray(((levels * self.scale - mean) / std).astype(dtype))


def channels_of(shape: Sequence[int], layout: str) -> int:
    return int(shape[3] if layout == "NHWC" else shape[1])


def nchw_shape(shape: Sequence[int], layout: str) -> Tuple[int, int, int, int]:
    n, a, b, c = (int(d) for d in shape)
    return (n, c, a, b) if layout == "NHWC" else (n, a, b, c)


def check_images(images, layout: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images of rank 4 ({layout}), got {images.dtype} of rank {images.ndim}")


def normalize_reference(images: np.ndarray, spec: Normalize, dtype) -> np.ndarray:
    """The definition: cast to float64, scale, subtract the mean, divide by the std, to NCHW, round once."""
    check_images(images, spec.layout)
    x = images.astype(np.float64)
    if spec.layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    channels = x.shape[1]
    mean = spec.channel_values(spec.mean, channels, "mean").reshape(1, channels, 1, 1)
    std = spec.channel_values(spec.std, channels, "std").reshape(1, channels, 1, 1)
    return np.ascontiguousarray(((x * spec.scale - mean) / std).astype(dtype))


def normalize_cpu(images: np.ndarray, table: np.ndarray, layout: str) -> np.ndarray:
    """uint8 NHWC or NCHW -> NCHW in `table`'s dtype: one vectorised lookup per channel plane."""
    check_images(images, layout)
    channels = table.shape[0]
    if channels_of(images.shape, layout) != channels:
        raise ValueError(f"images have {channels_of(images.shape, layout)} channels ({layout}); "
                         f"the model takes {channels}")
    out = np.empty(nchw_shape(images.shape, layout), dtype=table.dtype)
    for c in range(channels):
        plane = images[..., c] if layout == "NHWC" else images[:, c]
        out[:, c] = table[c][plane]
    return out


def normalize_device(images, table, layout: str, stream=None):
    """The CuPy path: `images` (uint8, on the device) -> a new NCHW device array in `table`'s dtype.

    Launched on `stream` (a cupy Stream; the current stream when None); the caller synchronises.
    """
    import cupy

    from gpuserve.kernels.cuda_module import blocks, function

    check_images(images, layout)
    channels = table.shape[0]
    if channels_of(images.shape, layout) != channels:
        raise ValueError(f"images have {channels_of(images.shape, layout)} channels ({layout}); "
                         f"the model takes {channels}")
    shape = nchw_shape(images.shape, layout)
    pixels = shape[2] * shape[3]
    planes = shape[0] * shape[1]
    name = "normalize_u8_f16" if table.dtype == np.float16 else "normalize_u8_f32"
    # Everything on `stream`: the output is allocated from its pool and a contiguous copy is made on it,
    # so the kernel never reads a copy still running on another stream.
    with stream if stream is not None else contextlib.nullcontext():
        out = cupy.empty(shape, dtype=table.dtype)
        if planes == 0 or pixels == 0:
            return out
        kernel = function("preprocess.cu", name, images.device.id)
        images = cupy.ascontiguousarray(images)
        kernel((planes, blocks(pixels, _THREADS)), (_THREADS,),
               (images, table, out, np.int32(channels), np.int64(pixels), np.int32(layout == "NHWC")))
    return out
