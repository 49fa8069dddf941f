from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from flowlearn.images.metrics import modcrop, psnr, quantize_8bit, rgb_to_y, ssim, to_uint8


def _noisy_pair(c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(c, h, w, generator=g, dtype=torch.float64)
    b = (a + 0.08 * torch.randn(c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return quantize_8bit(a), quantize_8bit(b)


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    # MATLAB-equivalent settings; skimage filters with reflect padding over the full image but
    # then averages only the map with the 5-pixel band crop(S, 5) removed, i.e. the 'valid' part,
    # so there is no border difference to account for.
    return float(
        structural_similarity(
            a.numpy().transpose(1, 2, 0) * 255,
            b.numpy().transpose(1, 2, 0) * 255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        )
    )


def test_psnr_hand_computed() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.float64)
    b = a.clone()
    b[:, :2] = 0.1  # half of the pixels off by 0.1: MSE = 0.005
    expected = 20 * math.log10(1 / math.sqrt(0.005))  # 23.0103 dB
    assert psnr(a, b).item() == pytest.approx(expected, abs=1e-9)
    assert psnr(a * 255, b * 255, data_range=255.0).item() == pytest.approx(expected, abs=1e-9)
    assert psnr(a, b).dtype == torch.float64


def test_psnr_border_ignores_the_frame() -> None:
    a = torch.zeros(1, 6, 6, dtype=torch.float64)
    b = torch.full((1, 6, 6), 0.1, dtype=torch.float64)
    b[:, 0, :] = 1.0  # one bad row in the frame
    assert psnr(a, b, border=1).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr(a, b).item() < 20.0
    assert math.isinf(psnr(a, a).item())


def test_psnr_batch_is_per_image() -> None:
    a = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    b = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.01)]).double()
    out = psnr(a, b)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.tensor([20.0, 40.0], dtype=torch.float64))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("border", [0, 4])
def test_ssim_matches_skimage(channels: int, border: int) -> None:
    a, b = _noisy_pair(channels, 40, 53)
    ours = ssim(a, b, border=border).item()
    crop = (..., slice(border, 40 - border), slice(border, 53 - border))
    assert ours == pytest.approx(_skimage_ssim(a[crop], b[crop]), abs=1e-10)
    assert ours < 0.99


def test_ssim_batch_identity_and_float32() -> None:
    a, b = _noisy_pair(3, 24, 24, seed=1)
    out = ssim(torch.stack([a, a]), torch.stack([b, a]))
    assert out.shape == (2,)
    assert out[1].item() == pytest.approx(1.0, abs=1e-12)
    assert out[0].item() == pytest.approx(ssim(a, b).item(), abs=1e-12)
    assert ssim(a.float(), b.float()).item() == pytest.approx(ssim(a, b).item(), abs=1e-6)


def test_ssim_needs_eleven_pixels() -> None:
    a = torch.rand(3, 14, 20)
    assert ssim(a, a, border=1).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="11×11"):
        ssim(a, a, border=2)


def test_metrics_reject_mismatched_or_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ssim(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), border=2)
    with pytest.raises(ValueError, match="non-negative"):
        psnr(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), border=-1)


def test_rgb_to_y_bt601() -> None:
    rgb = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    y = rgb_to_y(rgb.view(3, 1, 4)) * 255
    expected = torch.tensor([16.0, 235.0, 16 + 65.481, 16 + 128.553])
    assert y.shape == (1, 1, 4)
    assert torch.allclose(y.flatten(), expected, atol=1e-4)
    assert rgb_to_y(torch.rand(2, 3, 5, 5)).shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="RGB"):
        rgb_to_y(torch.rand(4, 5, 5))


def test_quantize_8bit_and_to_uint8() -> None:
    x = torch.tensor([-0.5, 0.0, 0.2, 100.4 / 255, 100.6 / 255, 1.0, 7.0])
    assert torch.equal(to_uint8(x), torch.tensor([0, 0, 51, 100, 101, 255, 255], dtype=torch.uint8))
    assert torch.equal(quantize_8bit(x) * 255, to_uint8(x).float())
    q = quantize_8bit(torch.rand(1000, dtype=torch.float64))
    assert torch.equal(quantize_8bit(q), q)  # idempotent
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="floating"):
        to_uint8(torch.tensor([1]))


def test_quantize_8bit_straight_through_same_values_identity_gradient() -> None:
    x = torch.tensor([-0.2, 0.3, 100.4 / 255, 0.999, 1.7], requires_grad=True)
    q = quantize_8bit(x, straight_through=True)
    assert torch.equal(q, quantize_8bit(x.detach()))
    (q * torch.arange(1.0, 6.0)).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.arange(1.0, 6.0))  # identity, also where clamped


def test_quantize_8bit_plain_gradient_is_zero() -> None:
    x = torch.tensor([0.3, 0.6], requires_grad=True)
    quantize_8bit(x).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.zeros(2))


def test_modcrop_crops_bottom_right_to_a_multiple() -> None:
    img = torch.arange(3 * 10 * 13).view(3, 10, 13)
    out = modcrop(img, 4)
    assert out.shape == (3, 8, 12)
    assert torch.equal(out, img[:, :8, :12])
    assert modcrop(img, 1) is not None and modcrop(img, 1).shape == img.shape
    with pytest.raises(ValueError, match="positive integer"):
        modcrop(img, 0)
    with pytest.raises(ValueError, match="smaller than the scale"):
        modcrop(img, 16)


def test_psnr_agrees_with_numpy_protocol_formula() -> None:
    a, b = _noisy_pair(3, 20, 20, seed=3)
    a255, b255 = a.numpy() * 255, b.numpy() * 255
    mse = np.mean((a255[:, 2:-2, 2:-2] - b255[:, 2:-2, 2:-2]) ** 2)
    assert psnr(a, b, border=2).item() == pytest.approx(20 * math.log10(255 / math.sqrt(mse)))
