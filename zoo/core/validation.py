"""Field checks shared by every config, plan, router and expert bank: one wording for each rule, and
every error names its owner and the field ("MoiieConfig.num_experts must be a positive integer, got 0").

    check_positive_int(owner, num_experts=4, top_k=2)       ints > 0
    check_non_negative_int(owner, num_head_res_blocks=2)    ints >= 0
    check_number(owner, "dropout", 0.1, low=0, high=1, high_open=True)   finite real numbers in a range
    check_non_negative(owner, router_aux_loss_coef=0.01)    finite real numbers >= 0 (loss coefficients, ridges)
    check_indices(owner, "shared_experts", [1, 2], size=4)  a list of indices in [0, size) -> list[int]
    check_instance(owner, "router", router, Router)         an object of a given type (a module, a tensor)
    check_weight(owner, "up", tensor, shape=(16, 8))        a finite floating-point tensor of that shape
    check_id_tensor(owner, "modality_ids", ids, (B, S))     an integer tensor of exactly that shape
    check_sub_configs(config)                               sub-config dicts name an architecture transformers knows
    check_choice(owner, "router", "top_k", ("top_k", "threshold"))
    check_bool(owner, normalize=True)                       True or False, nothing that merely looks like one
    renamed("top-2", {"top-2": "top_2"}, "plan")            an old spelling -> the new one, with a FutureWarning
    @strict_config                                          huggingface_hub's @strict (transformers v5 configs), its
                                                            errors raised as TypeError / ValueError naming Class.field

`owner` is a class name, a class or an instance (its class name is used), or None for a bare field name.
A bool is never accepted as a number (True is an int to Python, never a sensible expert count), and
NaN / inf are refused wherever a number is expected, and so is any number beyond +-LARGEST_NUMBER (1e6):
no coefficient, scale, ridge or capacity factor of a working model comes near it, and 1e300 times a
loss is inf in fp32 (NaN losses, an OverflowError in the capacity formula at the first forward). A value
of the wrong type raises `FieldTypeError`, which is both a TypeError and a ValueError, so
`except ValueError` catches every bad field.
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping

import torch

LARGEST_NUMBER = 1e6  # the largest magnitude any number field accepts (see the module docstring)


class FieldTypeError(TypeError, ValueError):
    """A field holds a value of the wrong type (a str where an int belongs, a bool for a count)."""


def _owner_name(owner) -> str:
    if owner is None or isinstance(owner, str):
        return owner or ""
    return owner.__name__ if isinstance(owner, type) else type(owner).__name__


def field_name(owner, name: str) -> str:
    """'MoiieConfig.num_experts' (or 'num_experts' without an owner)."""
    prefix = _owner_name(owner)
    return f"{prefix}.{name}" if prefix else name


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# -- integers ------------------------------------------------------------------------------------
def check_positive_int(owner, *, allow_none: bool = False, **fields) -> None:
    """Each value must be an int > 0 (or None with `allow_none`)."""
    for name, value in fields.items():
        if value is None and allow_none:
            continue
        suffix = " or None" if allow_none else ""
        if not _is_int(value):
            raise FieldTypeError(f"{field_name(owner, name)} must be a positive integer{suffix}, got {value!r}")
        if value <= 0:
            raise ValueError(f"{field_name(owner, name)} must be a positive integer{suffix}, got {value!r}")


def check_non_negative_int(owner, **fields) -> None:
    """Each value must be an int >= 0."""
    for name, value in fields.items():
        if not _is_int(value):
            raise FieldTypeError(f"{field_name(owner, name)} must be an integer >= 0, got {value!r}")
        if value < 0:
            raise ValueError(f"{field_name(owner, name)} must be an integer >= 0, got {value!r}")


# -- real numbers --------------------------------------------------------------------------------
def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_number(owner, name: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                 allow_none: bool = False, note: str = "") -> None:
    """`value` must be a finite real number (int or float, not bool) inside the interval; None only
    with `allow_none`. `note` is appended to the message (why the bound is there)."""
    if value is None and allow_none:
        return
    bounds = _interval(low, high, low_open, high_open) if low is not None or high is not None else ""
    rule = f"a finite number {bounds}".rstrip() + (" or None" if allow_none else "") + (f" {note}" if note else "")
    if not _is_real(value):
        raise FieldTypeError(f"{field_name(owner, name)} must be {rule}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{field_name(owner, name)} must be {rule}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{field_name(owner, name)} must be {rule}, got {value!r}")
    if abs(value) > LARGEST_NUMBER:
        raise ValueError(f"{field_name(owner, name)} must be {rule} and at most {LARGEST_NUMBER:g} in magnitude, "
                         f"got {value!r}")


def check_non_negative(owner, *, allow_none: bool = False, **fields) -> None:
    """Each value must be a finite number >= 0 (loss coefficients, noise scales, ridges)."""
    for name, value in fields.items():
        check_number(owner, name, value, low=0, allow_none=allow_none)


# -- choices and flags ---------------------------------------------------------------------------
def check_choice(owner, name: str, value, choices: Iterable) -> None:
    """`value` must be one of `choices` (a bool matches only a bool: True is not 1 here)."""
    choices = tuple(choices)
    if not any(value is c or (value == c and not isinstance(value, bool) and not isinstance(c, bool)) for c in choices):
        raise ValueError(f"{field_name(owner, name)} must be one of {choices}, got {value!r}")


def check_bool(owner, **fields) -> None:
    """Each value must be True or False: "false", 0 or None would read as a flag and mean the wrong thing."""
    for name, value in fields.items():
        if not isinstance(value, bool):
            raise FieldTypeError(f"{field_name(owner, name)} must be True or False, got {value!r}")


# -- indices, objects and tensors -----------------------------------------------------------------
def check_indices(owner, name: str, value, *, size: int | None = None, allow_empty: bool = True) -> list[int]:
    """A list or tuple of ints (not bools) in [0, size) -> a list. A string or a set is refused: "12"
    would read as indices "1" and "2", a set has no order."""
    what = f"a list of indices in [0, {size})" if size is not None else "a list of indices >= 0"
    if not isinstance(value, (list, tuple)):
        raise FieldTypeError(f"{field_name(owner, name)} must be {what}, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{field_name(owner, name)} must be {what}, not empty")
    for i, index in enumerate(value):
        check_non_negative_int(owner, **{f"{name}[{i}]": index})
        if size is not None and index >= size:
            raise ValueError(f"{field_name(owner, name)}[{i}] is {index!r}, outside [0, {size})")
    return [int(index) for index in value]


def check_instance(owner, name: str, value, kind: type | tuple[type, ...], *, allow_none: bool = False) -> None:
    """`value` must be an instance of `kind` (or None with `allow_none`)."""
    if value is None and allow_none:
        return
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds) + (" or None" if allow_none else "")
        raise FieldTypeError(f"{field_name(owner, name)} must be a {expected}, got {type(value).__name__} {value!r:.80}")


def check_weight(owner, name: str, value, *, shape: tuple[int, ...] | None = None, dims: int | None = None,
                 allow_none: bool = False) -> None:
    """`value` must be a floating-point tensor (of `shape`, or with `dims` dimensions) without NaN / inf:
    an integer tensor would be silently cast and a non-finite weight poisons every output it reaches.
    Meta tensors (shapes only) skip the finiteness check."""
    if value is None and allow_none:
        return
    check_instance(owner, name, value, torch.Tensor, allow_none=allow_none)
    if not value.is_floating_point():
        raise FieldTypeError(f"{field_name(owner, name)} must be a floating-point tensor, got dtype {value.dtype}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{field_name(owner, name)} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"{field_name(owner, name)} must be a {dims}-D tensor, got shape {tuple(value.shape)}")
    if not value.is_meta and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{field_name(owner, name)} holds NaN or inf values")


def check_id_tensor(owner, name: str, value, shape: tuple[int, ...], note: str = "") -> None:
    """`value` must be an integer tensor (token / modality ids) of exactly `shape`: a float or bool tensor
    would compare unequal to every id, and a transposed, flattened or shifted one assigns ids to the
    wrong tokens."""
    check_instance(owner, name, value, torch.Tensor)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise FieldTypeError(f"{field_name(owner, name)} must be an integer tensor, got dtype {value.dtype}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{field_name(owner, name)} must have shape {tuple(shape)}{f' ({note})' if note else ''}, "
                         f"got {tuple(value.shape)}")


# -- renamed spellings ---------------------------------------------------------------------------
def renamed(name: str, renames: Mapping[str, str], what: str, stacklevel: int = 3) -> str:
    """The current spelling of `name`: an old one from `renames` is accepted with a FutureWarning
    naming the new one (so saved checkpoints and scripts keep working), anything else is returned as is."""
    if name in renames:
        new = renames[name]
        warnings.warn(f"{what} {name!r} is deprecated and will be removed; use {new!r}", FutureWarning,
                      stacklevel=stacklevel)
        return new
    return name


# -- transformers v5 configs ---------------------------------------------------------------------
def check_sub_configs(config) -> None:
    """Call before PreTrainedConfig.__post_init__ builds the sub-configs: a dict whose `model_type`
    transformers does not know would fail there with a message that names no field."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for name in getattr(type(config), "sub_configs_defaults", {}):
        value = getattr(config, name)
        if not isinstance(value, Mapping) or "model_type" not in value:
            continue  # a config object, None (the default) or a dict of the default architecture's fields
        model_type = value["model_type"]
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            raise ValueError(f"{field_name(config, name)}: model_type {model_type!r} is not an architecture "
                             "transformers knows")


def _type_text(annotation) -> str:
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def strict_config(cls):
    """huggingface_hub's `@strict` (what transformers v5 puts on its configs: typed dataclass fields,
    checked on every assignment, and the `validate_*` methods run after `__init__` and before
    `save_pretrained`), with its errors raised as the zoo raises them: a field of the wrong type as
    FieldTypeError("XConfig.num_experts must be of type int, got str '2'"), a failed `validate_*`
    check as the ValueError it raised (the zoo's checks above name the class and the field).

    Put it on every config class, subclasses included: a subclass under a bare `@strict` would
    raise huggingface_hub's own StrictDataclass* errors again (tests/test_config_style.py checks)."""
    from huggingface_hub.dataclasses import strict
    from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

    cls = strict(cls)
    checked_setattr, checked_validate = cls.__setattr__, cls.validate

    def root_cause(error: BaseException) -> BaseException:
        while isinstance(error, (StrictDataclassFieldValidationError, StrictDataclassClassValidationError)) \
                and error.__cause__ is not None:
            error = error.__cause__
        return error

    @functools.wraps(checked_setattr)
    def __setattr__(self, name, value):
        try:
            checked_setattr(self, name, value)
        except StrictDataclassFieldValidationError as error:
            cause = root_cause(error)
            if isinstance(cause, TypeError):
                annotation = self.__dataclass_fields__[name].type if name in self.__dataclass_fields__ else "?"
                raise FieldTypeError(f"{field_name(self, name)} must be of type {_type_text(annotation)}, "
                                     f"got {type(value).__name__} {value!r}") from error
            raise ValueError(f"{field_name(self, name)}: {cause}") from error

    @functools.wraps(checked_validate)
    def validate(self):
        try:
            checked_validate(self)
        except StrictDataclassClassValidationError as error:
            raise root_cause(error) from None  # already names the class and the field

    validate.__is_defined_by_strict_decorator__ = True  # a subclass may put @strict_config on again
    cls.__setattr__, cls.validate = __setattr__, validate
    return cls


__all__ = [
    "LARGEST_NUMBER", "FieldTypeError", "check_bool", "check_choice", "check_id_tensor", "check_indices", "check_instance",
    "check_non_negative", "check_non_negative_int", "check_number", "check_positive_int", "check_sub_configs",
    "check_weight", "field_name", "renamed", "strict_config",
]
