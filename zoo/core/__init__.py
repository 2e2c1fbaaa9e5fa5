"""The routing core: router -> dispatch -> experts -> combine, and the losses routers own.

Imports nothing above itself (no model, tower, pipeline or app code); `import zoo.core` stays light.
"""
from .context import RoutingContext, RoutingInputs
from .dispatch import GROUPED_LINEAR_BACKENDS, ExpertGroups, dispatch, eager_grouped_linear, register_backend
from .expert_banks import ExpertBank, GatedMLP, GLUExperts, MLPExperts, SharedExperts
from .losses import load_balancing_loss, router_z_loss
from .modalities import MODALITY_IDS, MODALITY_NAMES
from .modality_router import ModalityRouter
from .moe import MoEBlock
from .presets import Presets
from .routing import Router, RoutingResult, ThresholdRouter, TopKRouter
from .uncertainty_router import UncertaintyAwareRouter
from .validation import (FieldTypeError, check_bool, check_choice, check_non_negative, check_non_negative_int,
                         check_number, check_positive_int, renamed, strict_config)

__all__ = [
    "GROUPED_LINEAR_BACKENDS", "MODALITY_IDS", "MODALITY_NAMES", "ExpertBank", "ExpertGroups", "FieldTypeError",
    "GLUExperts", "GatedMLP", "MLPExperts", "MoEBlock", "ModalityRouter", "Presets", "Router", "RoutingContext",
    "RoutingInputs", "RoutingResult", "SharedExperts", "ThresholdRouter", "TopKRouter", "UncertaintyAwareRouter",
    "check_bool", "check_choice", "check_non_negative", "check_non_negative_int", "check_number", "check_positive_int",
    "dispatch", "eager_grouped_linear", "load_balancing_loss", "register_backend", "renamed", "router_z_loss",
    "strict_config",
]
