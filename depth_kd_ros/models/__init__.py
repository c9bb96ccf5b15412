"""Depth networks: the registry plus the architectures registered in it (student and teacher)."""
from depth_kd_ros.models import student, teacher  # noqa: F401  (importing registers the architectures)
from depth_kd_ros.models.registry import (
    ARCHITECTURES,
    UnknownArchitectureError,
    build_model,
    register_architecture,
)

__all__ = ["ARCHITECTURES", "UnknownArchitectureError", "build_model", "register_architecture"]
