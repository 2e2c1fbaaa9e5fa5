"""moe-zoo: multimodal Mixture-of-Experts models on one routing core.

    router -> dispatch -> experts -> combine      (zoo.routing, zoo.dispatch, zoo.experts, zoo.moe)

Importing `zoo` also registers every zoo model with transformers' Auto classes (see zoo.models).
"""
from .dispatch import GROUPED_LINEAR_BACKENDS, ExpertGroups, dispatch, register_backend
from .experts import GatedMLP, GLUExperts, MLPExperts, SharedExperts
from .losses import load_balancing_loss, router_z_loss
from .moe import MoEBlock
from .routing import MODALITY_IDS, ModalityRouter, Router, RoutingResult, ThresholdRouter, TopKRouter
from .upcycle import PLANS, UpcyclePlan, routing_context, upcycle  # noqa: E402  (zoo.upcycle(model, plan): the function)

__version__ = "0.1.0"

__all__ = [
    "MODALITY_IDS", "ExpertGroups", "GLUExperts", "GROUPED_LINEAR_BACKENDS", "GatedMLP", "MLPExperts",
    "MoEBlock", "ModalityRouter", "Router", "RoutingResult", "SharedExperts", "ThresholdRouter",
    "TopKRouter", "dispatch", "load_balancing_loss", "register_backend", "router_z_loss",
    "PLANS", "UpcyclePlan", "routing_context", "upcycle",
]

from . import models as _models  # noqa: E402,F401  (registers configs/models with the Auto classes)
