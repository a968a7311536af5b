"""On a GPU a training step never waits for the GPU (so the host queues the next step while the GPU runs this one):
no host-device synchronisation per step in batching, augmentation, forward/backward or the update — only a few per
epoch (the epoch's shuffle and its mean loss). Run by ``make gpu-check``; skipped without CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch

from lth_tune.data import Split
from lth_tune.models import build_model
from lth_tune.pruning import attach_masks
from lth_tune.training import make_stepper, train_epochs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("autocast", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_training_steps_do_not_synchronise(autocast):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10)
    attach_masks(model, ignore=["fc"])
    model = model.to(device).to(memory_format=torch.channels_last)
    split = Split(torch.randn(20 * 16, 3, 32, 32, device=device), torch.randint(0, 10, (20 * 16,), device=device))
    stepper = make_stepper("sgd", model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator()
    gen.manual_seed(0)
    train_epochs(model, split, stepper, epochs=1, batch_size=16, generator=gen, augment=True,
                 autocast_dtype=autocast, channels_last=True)  # warm-up (cuDNN, allocator)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epochs(model, split, stepper, epochs=2, batch_size=16, generator=gen, augment=True,
                         autocast_dtype=autocast, channels_last=True)  # 2 epochs of 20 steps
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 2 * 2, [str(w.message)[:200] for w in syncs]  # per epoch, never per step
