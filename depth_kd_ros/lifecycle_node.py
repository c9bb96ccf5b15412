"""depth_lifecycle_node: depth_node as a managed (lifecycle) node, for Nav2-style bringup.

Same parameters, topics and per-frame work as depth_node (DepthNodeCore in node.py); only when they happen
differs. It starts unconfigured and follows the transitions its lifecycle services (``change_state``,
``get_state``, ...) are asked for:

- configure: check the parameters and load the model; a bad model or parameter fails the transition with the
  reason logged, and the node stays unconfigured;
- activate: subscribe, start the worker and timers, enable the (lifecycle) publishers;
- deactivate: stop all work: no subscriptions, timers or worker, publishers disabled;
- cleanup: free the model and publishers;
- shutdown, from any state: all of the above that applies; the node then stays finalized until stopped.
"""

from __future__ import annotations

from lifecycle_msgs.srv import ChangeState
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile

from depth_kd_ros.node import DepthNodeCore, run

RCLError = rclpy_implementation.RCLError


class DepthLifecycleNode(DepthNodeCore, LifecycleNode):
    """depth_node's behaviour behind the managed-node state machine."""

    def __init__(self, **kwargs) -> None:
        super().__init__("depth_node", **kwargs)
        self._refuse_invalid_transitions()

    def _refuse_invalid_transitions(self) -> None:
        """Answer success=False to a transition the current state lacks (e.g. activate while unconfigured).

        rclpy 7.1 (Jazzy) lets the state machine's RCLError escape the change_state service and spin() with it,
        so any caller could stop the node (ros2/rclpy#1209; rclcpp answers False, as this does).
        """
        service = getattr(self, "_service_change_state", None)
        if service is None:  # another rclpy, without the communication interface or with other names
            return
        answer = service.callback

        def change_state(request: ChangeState.Request, response: ChangeState.Response) -> ChangeState.Response:
            try:
                return answer(request, response)
            except RCLError as error:
                transition = request.transition.label or request.transition.id
                self.get_logger().warning(f"transition {transition} refused: {error}")
                response.success = False
                return response

        service.callback = change_state

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers; FAILURE (reason logged, still unconfigured) when it cannot."""
        try:
            self.configure()
        except Exception as error:  # noqa: BLE001 - a bad model or parameter fails the transition, not the node
            self.get_logger().error(f"configure failed: {error}")
            self.cleanup()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, then subscribe and start the worker."""
        result = super().on_activate(state)  # enables the lifecycle publishers before the first frame comes
        self.activate()
        self.get_logger().info("active")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop all work, then disable the publishers."""
        self.deactivate()
        self.get_logger().info("inactive: no subscriptions, no inference")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model and the publishers."""
        self.cleanup()
        self.get_logger().info("unconfigured: model freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop and free whatever is running or loaded."""
        self._wind_down()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: stop and free everything, back to unconfigured."""
        self._wind_down()
        return super().on_error(state)

    def _wind_down(self) -> None:
        if self._active:
            self.deactivate()
        self.cleanup()

    def _create_output(self, msg_type: type, topic: str, qos: QoSProfile | int, **kwargs) -> Publisher:
        return self.create_lifecycle_publisher(msg_type, topic, qos, **kwargs)

    def _destroy_output(self, publisher: Publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)


def main(args: list[str] | None = None) -> None:
    """The depth_lifecycle_node executable."""
    run(DepthLifecycleNode, "depth_lifecycle_node", args)


if __name__ == "__main__":
    main()
