"""Placeholder until the node lands."""


def main() -> None:
    raise SystemExit("depth_node: not implemented yet")
