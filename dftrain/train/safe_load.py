"""Load DeepSpeed checkpoint files without running code that came with them.

DeepSpeed (its checkpoint engine and zero_to_fp32) unpickles `*.pt` files with
`weights_only=False`: a checkpoint from elsewhere can then run anything (a crafted
`mp_rank_00_model_states.pt` ran `os.system`). Inside `weights_only_loading()` every
`torch.load` uses PyTorch's restricted unpickler, which builds tensors, plain containers and
numbers, plus the few DeepSpeed data classes its optimizer states hold, and refuses the rest.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from dftrain.errors import DftrainError


def _deepspeed_checkpoint_classes() -> list:
    """Data-only classes that DeepSpeed 0.19 writes into ZeRO optimizer states (found by reading real checkpoints)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [fragment_address, ZeroStageEnum, LossScaler, DynamicLossScaler]


def refusal_message(path: object, exc: Exception) -> str:
    found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
    what = f"it would import {found.group(1)}" if found else "it is not plain tensor data"
    return (f"refused to load {path}: {what} (a checkpoint file may only hold tensors and plain data; "
            "code in a file from elsewhere could run)")


@contextmanager
def weights_only_loading() -> Iterator[None]:
    """Every torch.load inside (DeepSpeed's included) loads with weights_only=True; refusals are one-line errors."""
    original = torch.load

    def restricted_load(f, map_location=None, *args, weights_only=None, **kwargs):
        try:
            return original(f, map_location, *args, weights_only=True, **kwargs)
        except pickle.UnpicklingError as exc:
            raise DftrainError(refusal_message(f, exc)) from None

    torch.load = restricted_load
    try:
        with torch.serialization.safe_globals(_deepspeed_checkpoint_classes()):
            yield
    finally:
        torch.load = original


def load_checkpoint_file(path: Path) -> dict:
    """One `.pt` file of a checkpoint, under the restricted unpickler."""
    with weights_only_loading():
        return torch.load(path, map_location="cpu")
