"""depth_kd: offline tooling for depth_kd_ros (synthetic world, bag datasets, teachers, distillation)."""

__version__ = "0.1.0"
