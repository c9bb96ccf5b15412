"""Parameter defaults, config/depth.yaml and the launch file agree; stats windows count correctly."""

from __future__ import annotations

import ast
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO_ROOT

from depth_kd_ros.params import NodeParams, depth_limits
from depth_kd_ros.stats import FrameStats


def test_yaml_mirrors_code_defaults():
    config = yaml.safe_load((REPO_ROOT / "config" / "depth.yaml").read_text())
    assert config["/**"]["ros__parameters"] == asdict(NodeParams())


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((REPO_ROOT / "launch" / "depth.launch.py").read_text())
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"
    }
    assert {"params_file", "image", "camera_info", "model_path", "device", "namespace", "use_rviz"} <= declared


def test_rviz_config_shows_the_node_outputs():
    config = yaml.safe_load((REPO_ROOT / "rviz" / "depth.rviz").read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    assert displays["rviz_default_plugins/PointCloud2"]["Topic"]["Value"] == "/depth/points"
    assert displays["rviz_default_plugins/PointCloud2"]["Topic"]["Reliability Policy"] == "Reliable"
    topics = {d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"] if "Topic" in d}
    assert {"/depth/colored", "/depth/image"} <= topics


def test_stats_window_rates_and_counts():
    now = [100.0]
    stats = FrameStats(clock=lambda: now[0], wall_clock=lambda: 50.5)
    for _ in range(10):
        stats.frame_in()
    stats.drop()
    stats.stages({"decode": 0.001, "inference": 0.02})
    stats.stages({"decode": 0.003, "inference": 0.04})
    stats.frame_out(SimpleNamespace(sec=50, nanosec=400_000_000))
    stats.bad_input("image", "bad image: truncated")
    now[0] = 102.0
    report = stats.report()
    assert report.input_rate_hz == 5.0 and report.output_rate_hz == 0.5
    assert abs(report.inference_ms_mean - 30.0) < 1e-9 and abs(report.latency_ms_mean - 100.0) < 1e-6
    assert (report.frames_in, report.frames_out, report.dropped) == (10, 1, 1)
    assert report.stage_ms_mean == pytest.approx({"decode": 2.0, "inference": 30.0})
    assert report.bad_inputs == {"image": 1} and report.new_bad_inputs == 1
    assert report.last_bad_input == "bad image: truncated"
    now[0] = 104.0
    second = stats.report()
    assert second.input_rate_hz == 0.0 and second.new_bad_inputs == 0 and second.frames_in == 10


@pytest.mark.parametrize("min_depth, max_depth, expected", [
    (0.0, 0.0, (0.1, 10.0)),   # the model's own range
    (0.5, 4.0, (0.5, 4.0)),    # tighter
    (0.01, 50.0, (0.1, 10.0)),  # looser than the model: the model's range still holds
])
def test_depth_limits_inside_the_model_range(min_depth, max_depth, expected):
    assert depth_limits(NodeParams(min_depth=min_depth, max_depth=max_depth), (0.1, 10.0)) == expected


@pytest.mark.parametrize("min_depth, max_depth", [(50.0, 0.0), (0.0, 0.05), (10.0, 0.0), (5.0, 5.0)])
def test_depth_limits_that_leave_nothing_are_refused(min_depth, max_depth):
    with pytest.raises(ValueError, match="leave nothing of the model's range, 0.1 to 10 m"):
        depth_limits(NodeParams(min_depth=min_depth, max_depth=max_depth), (0.1, 10.0))


def test_threads_zero_is_two_for_onnxruntime_and_one_for_torch_within_the_cpus_available():
    import os

    from depth_kd_ros.params import network_threads

    assert network_threads(3, "m.onnx") == 3 and network_threads(3, "m.safetensors") == 3  # explicit: as given
    assert network_threads(0, "m.safetensors") == 1
    cpus = os.sched_getaffinity(0)
    assert network_threads(0, "m.onnx") == min(2, len(cpus))
    os.sched_setaffinity(0, {min(cpus)})  # a one-CPU process gets one thread
    try:
        assert network_threads(0, "m.onnx") == 1
    finally:
        os.sched_setaffinity(0, cpus)


def test_the_shipped_dds_profile_is_used_only_when_the_user_chose_none(tmp_path, monkeypatch):
    from depth_kd_ros.node import shipped_dds_profile, use_shipped_dds_profile

    monkeypatch.chdir(tmp_path)
    shipped = shipped_dds_profile()
    assert shipped is not None and shipped.name == "fastdds.xml" and "<profiles" in shipped.read_text()
    env = {}
    assert use_shipped_dds_profile(env) == shipped and env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(shipped)}
    for own in ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"},
                {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}):
        env = dict(own)
        assert use_shipped_dds_profile(env) is None and env == own
    (tmp_path / "DEFAULT_FASTRTPS_PROFILES.xml").write_text("<profiles/>")  # Fast DDS reads it from the cwd
    assert use_shipped_dds_profile({}) is None


def test_the_shipped_dds_profile_parses_and_heartbeats_within_a_frame():
    """Fast DDS skips a profile file that is not well-formed XML (a ``--`` in a comment is enough), and a writer
    heartbeat period over one frame interval delays a new reliable viewer's first frame (config/fastdds.xml)."""
    import xml.etree.ElementTree as ET

    from depth_kd_ros.node import shipped_dds_profile

    ns = {"p": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(shipped_dds_profile()).getroot()
    period = root.find("p:data_writer[@is_default_profile='true']/p:times/p:heartbeatPeriod", ns)
    seconds = int(period.find("p:sec", ns).text) + int(period.find("p:nanosec", ns).text) * 1e-9
    assert 0 < seconds < 1 / 30
    assert root.find("p:participant[@is_default_profile='true']//p:leaseAnnouncement", ns) is not None
