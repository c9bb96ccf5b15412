"""Start depth_node (and optionally RViz2): `ros2 launch depth_kd_ros depth.launch.py image:=/camera/image_raw`."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("depth_kd_ros")
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "depth.yaml"),
                              description="YAML with depth_node parameters"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (Image; '<image>/compressed' is used when "
                                          "image_transport is compressed)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo topic"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="student model (.onnx or .safetensors); empty = the default weights"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | torch | onnxruntime"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw | compressed"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node's outputs"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start RViz2 with rviz/depth.rviz"),
        DeclareLaunchArgument("fixed_frame", default_value="camera_optical_frame",
                              description="RViz fixed frame: the camera's optical frame id"),
    ]
    # Large images need a bigger Fast DDS shared-memory segment (see config/fastdds.xml); a user's own
    # profile wins.
    fastdds_profile = SetEnvironmentVariable(
        "FASTRTPS_DEFAULT_PROFILES_FILE",
        EnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                            default_value=os.path.join(share, "config", "fastdds.xml")),
    )
    depth_node = Node(
        package="depth_kd_ros",
        executable="depth_node",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), {
            "model_path": arg("model_path"),
            "backend": arg("backend"),
            "device": arg("device"),
            "image_transport": arg("image_transport"),
        }],
        remappings=[
            ("image_raw", arg("image")),
            ("image_raw/compressed", [arg("image"), "/compressed"]),
            ("camera_info", arg("camera_info")),
        ],
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", os.path.join(share, "rviz", "depth.rviz"), "-f", arg("fixed_frame")],
        condition=IfCondition(arg("use_rviz")),
        output="log",
    )
    return LaunchDescription([*arguments, fastdds_profile, depth_node, rviz])
