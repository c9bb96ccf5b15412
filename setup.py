"""ament_python package for the depth_kd_ros runtime node (training/ is a separate package)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depth_kd_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.onnx", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    python_requires=">=3.10",
    # numpy/opencv/rclpy come from the ROS distro (or the venv set-up). ONNX Runtime (the default backend) is
    # all a robot needs to run .onnx models; `pip install .[torch]` adds the torch backend (.safetensors).
    install_requires=["setuptools", "numpy", "onnxruntime", "rosbags>=0.10"],
    extras_require={"torch": ["torch", "torchvision", "safetensors"]},
    zip_safe=True,
    maintainer="depth_kd_ros maintainers",
    maintainer_email="maintainers@depth-kd-ros.invalid",
    description="Real-time metric monocular depth node for ROS 2 (distilled student network).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={"console_scripts": [f"depth_node = {PACKAGE}.node:main",
                                      f"depth_lifecycle_node = {PACKAGE}.lifecycle_node:main"]},
)
