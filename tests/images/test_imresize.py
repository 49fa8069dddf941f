from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowlearn.images.imresize import cubic, imresize, resize_matrix
from tests.conftest import irn_reference


def _matlab_loops(img: np.ndarray, scale: float) -> np.ndarray:
    # Independent, slow reference for one axis (axis 0) written as MATLAB's imresize does it:
    # explicit taps, trimmed zero taps, np.pad(mode="symmetric").
    n = img.shape[0]
    n_out = math.ceil(n * scale)
    shrink = scale < 1
    width = 4 / scale if shrink else 4.0
    rows = []
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + t for t in range(math.ceil(width) + 2)]
        w = np.array(
            [scale * _k(scale * (u - j)) if shrink else _k(u - j) for j in taps], dtype=np.float64
        )
        keep = w != 0
        taps = [j for j, k in zip(taps, keep) if k]
        w = w[keep] / w[keep].sum()
        rows.append((taps, w))
    lo = max(0, 1 - min(j for taps, _ in rows for j in taps))
    hi = max(0, max(j for taps, _ in rows for j in taps) - n)
    padded = np.pad(img, [(lo, hi)] + [(0, 0)] * (img.ndim - 1), mode="symmetric")
    out = [sum(wj * padded[j - 1 + lo] for j, wj in zip(taps, w)) for taps, w in rows]
    return np.stack(out)


def _k(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


@pytest.mark.parametrize("scale", [2, 4])
def test_imresize_matches_official_bicubic_lr(scale: int) -> None:
    data = irn_reference(scale)
    x, ref = data["x"], data["lr_ref_bicubic"]
    lr = imresize(x, 1 / scale)
    assert lr.shape == ref.shape
    assert (lr - ref).abs().max().item() < 1e-6
    lr64 = imresize(x.double(), 1 / scale)
    assert (lr64 - ref.double()).abs().max().item() < 1e-6


@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 2.0, 4.0, 3.0])
def test_imresize_equals_loop_reference_with_symmetric_padding(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    img = torch.rand(13, 11, dtype=torch.float64, generator=g)
    ref = _matlab_loops(_matlab_loops(img.numpy(), scale).T, scale).T  # rows, then columns
    out = imresize(img, scale)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4])
def test_imresize_interior_matches_interpolate_antialias(scale: int) -> None:
    x = torch.rand(2, 3, 24, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    down = imresize(x, 1 / scale)
    ref = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True)
    assert torch.allclose(down[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-12)
    assert (down - ref).abs().max() > 1e-3  # the border differs: MATLAB mirrors the image
    up = imresize(x, float(scale))
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", antialias=True)
    b = 2 * scale
    assert up.shape == (2, 3, 24 * scale, 20 * scale)
    assert torch.allclose(up[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4])
def test_imresize_upscale_reproduces_linear_ramp(scale: int) -> None:
    # Keys' cubic reproduces polynomials up to degree 2, so a ramp j (1-based) is sampled at u_i.
    n = 12
    ramp = torch.arange(1, n + 1, dtype=torch.float64).view(n, 1).expand(n, 5)
    up = imresize(ramp, float(scale))
    i = torch.arange(1, n * scale + 1, dtype=torch.float64)
    u = i / scale + 0.5 * (1 - 1 / scale)
    inner = slice(2 * scale, -2 * scale)
    assert torch.allclose(up[inner, 0], u[inner], atol=1e-12)
    assert torch.allclose(imresize(torch.ones(2, 3, 5, 7), float(scale)), torch.ones(1))


def test_imresize_batch_and_leading_dims() -> None:
    x = torch.rand(2, 3, 16, 12)
    batched = imresize(x, 0.5)
    assert torch.equal(batched[1, 2], imresize(x[1, 2], 0.5))
    assert imresize(x[0, 0], 0.5).shape == (8, 6)
    assert imresize(x.unsqueeze(0), 0.5).shape == (1, 2, 3, 8, 6)


def test_imresize_size_argument_matches_scale() -> None:
    x = torch.rand(3, 16, 12, dtype=torch.float64)
    assert torch.equal(imresize(x, size=(8, 6)), imresize(x, 0.5))
    assert imresize(x, size=(20, 9)).shape == (3, 20, 9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_imresize_keeps_dtype_and_device(dtype: torch.dtype) -> None:
    x = torch.rand(3, 8, 8).to(dtype)
    y = imresize(x, 0.5)
    assert y.dtype == dtype and y.device == x.device
    ref = imresize(x.double(), 0.5)
    assert torch.allclose(y.double(), ref, atol=0.02)


def test_imresize_output_size_is_ceil_without_rounding_noise() -> None:
    assert imresize(torch.rand(510, 4), 1 / 3).shape == (
        170,
        2,
    )  # 510 * (1/3) is 170.00000000000003
    assert imresize(torch.rand(10, 10), 0.25).shape == (3, 3)  # ceil(2.5)


def test_imresize_does_not_modify_input() -> None:
    x = torch.rand(3, 8, 8)
    before = x.clone()
    imresize(x, 0.5)
    assert torch.equal(x, before)


def test_resize_matrix_rows_sum_to_one() -> None:
    m = resize_matrix(17, 5, 5 / 17)
    assert m.shape == (5, 17)
    assert torch.allclose(m.sum(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-14)
    m[0, 0] = 99.0  # a copy: the cached table is unaffected
    assert resize_matrix(17, 5, 5 / 17)[0, 0] != 99.0


def test_cubic_kernel_values() -> None:
    t = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])
    assert torch.allclose(cubic(t), expected)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.zeros(4, 4, dtype=torch.uint8), 0.5), {}, "floating-point"),
        ((torch.zeros(4), 0.5), {}, r"\(\.\.\., H, W\)"),
        ((torch.zeros(4, 4),), {}, "exactly one"),
        ((torch.zeros(4, 4), 0.5), {"size": (2, 2)}, "exactly one"),
        ((torch.zeros(4, 4), 0.0), {}, "positive"),
        ((torch.zeros(4, 4), -2.0), {}, "positive"),
        ((torch.zeros(4, 4), float("nan")), {}, "finite"),
        ((torch.zeros(4, 4), float("inf")), {}, "finite"),
        ((torch.zeros(4, 4), True), {}, "positive number"),
        ((torch.zeros(4, 4),), {"size": (0, 2)}, "positive integer"),
        ((torch.zeros(4, 4),), {"size": (2,)}, r"\(H_out, W_out\)"),
        ((torch.zeros(4, 4), 1e-12), {}, "empty"),
        (([[1.0]], 0.5), {}, "torch.Tensor"),
    ],
)
def test_imresize_bad_arguments_raise(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        imresize(*args, **kwargs)


def test_imresize_differentiable_after_inference_mode_use() -> None:
    # Tables first cached under inference_mode must still work in a differentiable call.
    with torch.inference_mode():
        imresize(torch.rand(3, 10, 6, dtype=torch.float64), 0.5)
    x = torch.rand(3, 10, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.5), (x,))
    imresize(x, 0.5).sum().backward()
    assert x.grad is not None and x.grad.sum().item() == pytest.approx(3 * 5 * 3)
