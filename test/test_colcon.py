"""README install (a), exercised: `colcon build` of this package, then the executable from install/ answers a
peer over DDS with the environment `source install/setup.bash` gives.

colcon comes from PyPI (colcon-common-extensions, in requirements.txt); it runs setup.py with this Python, so
the installed scripts use it too, with the rclpy and message packages of the venv, as a ROS distro's would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from ros_harness import NodeProcess, Peer, make_image, stamp_of

pytestmark = pytest.mark.ros
PACKAGE = "depth_kd_ros"


def _colcon() -> str | None:
    """colcon of this Python's environment (its scripts then run with this Python), else on PATH."""
    here = Path(sys.executable).parent / "colcon"
    return str(here) if here.exists() else shutil.which("colcon")


def _sourced_env(setup_bash: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment after `source <setup_bash>` in bash, starting from ``env``."""
    out = subprocess.run(["bash", "-c", f'source "{setup_bash}" && env -0'], env=env, capture_output=True,
                         check=True, timeout=60).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    """`colcon build` of the checkout into a fresh build/install/log; returns the install base."""
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions; requirements.txt has it)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    result = subprocess.run(
        [colcon, "--log-base", str(ws / "log"), "build", "--base-paths", str(REPO_ROOT),
         "--packages-select", PACKAGE, "--build-base", str(ws / "build"), "--install-base", str(ws / "install")],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return ws / "install"


def test_colcon_installs_both_executables_and_the_share_files(colcon_install):
    lib = colcon_install / PACKAGE / "lib" / PACKAGE  # where `ros2 run depth_kd_ros <name>` looks (setup.cfg)
    for name in ("depth_node", "depth_lifecycle_node"):
        assert os.access(lib / name, os.X_OK), sorted(p.name for p in lib.iterdir())
    share = colcon_install / PACKAGE / "share" / PACKAGE
    for relative in ("package.xml", "launch/depth.launch.py", "config/depth.yaml", "config/fastdds.xml",
                     "rviz/depth.rviz"):
        assert (share / relative).is_file(), relative
    # the ament index entry that lets ros2 run/launch find the package
    assert (colcon_install / PACKAGE / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


def test_installed_depth_node_answers_over_dds(colcon_install, tmp_path, tiny_onnx):
    # As a user's shell: no Fast DDS profile of ours (the node applies the installed one), install/ sourced.
    base = {k: v for k, v in os.environ.items() if k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
    env = _sourced_env(colcon_install / "setup.bash", base)
    site = colcon_install / PACKAGE / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    imported = subprocess.run([sys.executable, "-c", "import depth_kd_ros.node as m; print(m.__file__)"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert Path(imported).is_relative_to(site), imported  # the installed copy, not the checkout

    executable = colcon_install / PACKAGE / "lib" / PACKAGE / "depth_node"
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu"}, tmp_path / "installed.log",
                       command=(str(executable),), env=env)
    peer = Peer(subscribe=("depth/image",))
    try:
        peer.wait_connected(node)
        rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        depth = peer.send_and_wait(make_image(rgb, stamp_of(time.time())))
        assert depth is not None and (depth.width, depth.height) == (160, 120), node.log()
        installed_profile = colcon_install / PACKAGE / "share" / PACKAGE / "config" / "fastdds.xml"
        assert f"Fast DDS profile {installed_profile}" in node.log()
    finally:
        peer.close()
        rc = node.stop()
    assert rc == 0, node.log()
