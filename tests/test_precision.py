"""zoo.core.precision: bf16 autocast only where this machine multiplies bf16 natively; $ZOO_AUTOCAST overrides."""
import pytest
import torch

from zoo.core import precision


def test_autocast_follows_the_hardware(monkeypatch):
    monkeypatch.delenv(precision.OVERRIDE_VARIABLE, raising=False)
    native = precision.native_bf16("cpu")
    assert native == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    with precision.autocast():
        out = torch.nn.functional.linear(torch.randn(4, 8), torch.randn(3, 8))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert precision.mixed_precision() == ("bf16" if native else "no")


@pytest.mark.parametrize("value, enabled", [("bf16", True), ("BFloat16", True), ("fp32", False), ("no", False)])
def test_the_environment_overrides(monkeypatch, value, enabled):
    monkeypatch.setenv(precision.OVERRIDE_VARIABLE, value)
    assert precision.bf16_autocast_enabled() is enabled
    with precision.autocast():
        out = torch.nn.functional.linear(torch.randn(4, 8), torch.randn(3, 8))
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)


def test_a_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv(precision.OVERRIDE_VARIABLE, "fp16")
    with pytest.raises(ValueError, match=r"\$ZOO_AUTOCAST must be 'bf16' or 'fp32', got 'fp16'"):
        precision.autocast()


def test_other_devices_have_no_native_bf16_here():
    assert precision.native_bf16("mps") is False
    assert precision.native_bf16("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
