"""depth_kd_ros: real-time metric monocular depth for ROS 2 from a small distilled network."""

__version__ = "0.1.0"
