"""depth_lifecycle_node driven through its lifecycle services over DDS, as a Nav2 lifecycle manager would."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from ros_harness import NodeProcess, Peer, make_camera_info, make_image, stamp_of

pytestmark = pytest.mark.ros

LIFECYCLE_NODE = (sys.executable, "-m", "depth_kd_ros.lifecycle_node")  # this checkout's code, installed or not
WIDTH, HEIGHT = 160, 120
QUIET_S = 1.5  # how long "nothing comes" is watched for


class Lifecycle:
    """The lifecycle services of /depth_node, called from the peer."""

    def __init__(self, peer: Peer, node: NodeProcess) -> None:
        self.peer, self.node = peer, node
        self._change = peer.node.create_client(ChangeState, "/depth_node/change_state")
        self._get = peer.node.create_client(GetState, "/depth_node/get_state")
        assert self._change.wait_for_service(timeout_sec=30) and self._get.wait_for_service(timeout_sec=30), \
            node.log()

    def _call(self, client, request, timeout: float = 60.0):
        future = client.call_async(request)
        assert self.peer.wait_for(future.done, timeout), f"no answer from {client.srv_name}:\n{self.node.log()}"
        return future.result()

    def change(self, transition: int) -> bool:
        return self._call(self._change, ChangeState.Request(transition=Transition(id=transition))).success

    def state(self) -> str:
        return self._call(self._get, GetState.Request()).current_state.label


def _frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _answered(peer: Peer, timeout: float) -> bool:
    """Send one frame; whether depth for it comes back within ``timeout`` seconds."""
    return peer.send_and_wait(make_image(_frame(), stamp_of(time.time())), timeout=timeout) is not None


def _diagnostics_count(peer: Peer) -> int:
    return len(peer.diagnostics_history())


@pytest.fixture()
def peer():
    peer = Peer()
    yield peer
    peer.close()


def test_transitions_gate_model_subscriptions_and_publishing(tmp_path, tiny_onnx, peer):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "diagnostics_period": 0.2},
                       tmp_path / "lifecycle.log", command=LIFECYCLE_NODE)
    try:
        lifecycle = Lifecycle(peer, node)
        assert lifecycle.state() == "unconfigured"
        assert peer.node.count_publishers("depth/image") == 0 and "model " not in node.log()

        # configure: the model loads and the publishers exist, but nothing is subscribed, computed or published
        assert lifecycle.change(Transition.TRANSITION_CONFIGURE), node.log()
        assert lifecycle.state() == "inactive"
        assert f"model {tiny_onnx}" in node.log()
        assert peer.wait_for(lambda: peer.node.count_publishers("depth/image") > 0), node.log()
        assert not _answered(peer, QUIET_S)
        assert peer.pub_image.get_subscription_count() == 0 and peer.pub_info.get_subscription_count() == 0
        assert _diagnostics_count(peer) == 0

        # activate: subscribed, frames answered, diagnostics flowing
        assert lifecycle.change(Transition.TRANSITION_ACTIVATE), node.log()
        assert lifecycle.state() == "active"
        peer.wait_connected(node)
        peer.pub_info.publish(make_camera_info(WIDTH, HEIGHT, 200.0))
        assert _answered(peer, 20.0), node.log()
        assert peer.wait_for(lambda: _diagnostics_count(peer) > 0), node.log()

        # deactivate: unsubscribed, frames not answered, no diagnostics
        assert lifecycle.change(Transition.TRANSITION_DEACTIVATE), node.log()
        assert lifecycle.state() == "inactive"
        assert peer.wait_for(lambda: peer.pub_image.get_subscription_count() == 0), node.log()
        time.sleep(0.3)  # a diagnostics message already on its way
        diagnostics = _diagnostics_count(peer)
        assert not _answered(peer, QUIET_S)
        assert _diagnostics_count(peer) == diagnostics

        # active again: a new worker answers
        assert lifecycle.change(Transition.TRANSITION_ACTIVATE), node.log()
        peer.wait_connected(node)
        assert _answered(peer, 20.0), node.log()

        # deactivate + cleanup: the model and publishers are gone
        assert lifecycle.change(Transition.TRANSITION_DEACTIVATE), node.log()
        assert lifecycle.change(Transition.TRANSITION_CLEANUP), node.log()
        assert lifecycle.state() == "unconfigured"
        assert "model freed" in node.log()
        assert peer.wait_for(lambda: peer.node.count_publishers("depth/image") == 0), node.log()

        # configured and active again, then shut down from active: finalized, no work, process still there
        assert lifecycle.change(Transition.TRANSITION_CONFIGURE), node.log()
        assert lifecycle.change(Transition.TRANSITION_ACTIVATE), node.log()
        peer.wait_connected(node)
        assert _answered(peer, 20.0), node.log()
        assert lifecycle.change(Transition.TRANSITION_ACTIVE_SHUTDOWN), node.log()
        assert lifecycle.state() == "finalized"
        assert peer.wait_for(lambda: peer.node.count_publishers("depth/image") == 0), node.log()
        assert peer.pub_image.get_subscription_count() == 0
        assert node.alive()
    finally:
        rc = node.stop()
    assert rc == 0, node.log()
    assert "Traceback" not in node.log()


def test_configure_with_a_broken_model_fails_cleanly(tmp_path, peer):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 7)
    node = NodeProcess({"model_path": str(broken), "device": "cpu"}, tmp_path / "broken.log",
                       command=LIFECYCLE_NODE)
    try:
        lifecycle = Lifecycle(peer, node)
        assert not lifecycle.change(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "unconfigured" and node.alive()
        assert "configure failed" in node.log() and "broken.safetensors" in node.log()
        assert peer.node.count_publishers("depth/image") == 0
        # a transition the state does not allow is refused, the node lives on
        assert not lifecycle.change(Transition.TRANSITION_ACTIVATE)
        assert lifecycle.change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN), node.log()
        assert lifecycle.state() == "finalized" and node.alive()
    finally:
        rc = node.stop()
    assert rc == 0, node.log()
    assert "Traceback" not in node.log()


def test_bad_parameter_values_fail_configure_not_the_process(tmp_path, tiny_onnx, peer):
    node = NodeProcess({"model_path": tiny_onnx, "device": "cpu", "min_depth": 50.0}, tmp_path / "limits.log",
                       command=LIFECYCLE_NODE)
    try:
        lifecycle = Lifecycle(peer, node)
        assert not lifecycle.change(Transition.TRANSITION_CONFIGURE)
        assert lifecycle.state() == "unconfigured" and node.alive()
        assert "min_depth=50 and max_depth=0 leave nothing of the model's range" in node.log()
    finally:
        rc = node.stop()
    assert rc == 0, node.log()
