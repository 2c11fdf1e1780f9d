"""One precision-name table for every stage (dftrain/dtypes.py)."""

import pytest
import torch

from dftrain.dtypes import lower_precision_dtype, torch_dtype
from dftrain.errors import ConfigError


@pytest.mark.parametrize("short,long,dtype", [("fp32", "float32", torch.float32), ("fp16", "float16", torch.float16),
                                              ("bf16", "bfloat16", torch.bfloat16)])
def test_both_spellings_name_the_same_dtype(short, long, dtype):
    assert torch_dtype(short) is dtype and torch_dtype(long) is dtype and torch_dtype(dtype) is dtype


def test_an_unknown_name_is_one_clear_error_naming_the_option():
    with pytest.raises(ConfigError, match=r"unknown --precision 'int8'; choose one of fp32, float32"):
        torch_dtype("int8", "precision")


def test_training_precision_maps_to_the_compute_dtype():
    assert [lower_precision_dtype(p) for p in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16,
                                                                           torch.float32]


def test_stages_use_the_shared_table():
    from dftrain.evaluate.generate import _torch_dtype
    from dftrain.llm.backends import _resolve_dtype

    assert _torch_dtype("bf16", "cpu") is torch.bfloat16 and _resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown --dtype 'half'"):
        _resolve_dtype("half")
