"""Fixtures shared by the IRN tests: a folder of training images and a saved tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four smooth 40×48 training images (`smooth_image` seeds 0 to 3) in one folder."""
    return write_images(tmp_path_factory.mktemp("train_images"), [(40, 48)] * 4)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh tiny ×2 IRN (one dense block per level, seed 0) saved as a checkpoint."""
    from flowlearn.irn.checkpoint import save
    from flowlearn.irn.model import IRN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny_x2.pt"
    save(IRN(2, blocks=[1], growth=4), path)
    return path
