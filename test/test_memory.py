"""depth_kd_ros.memory: freed per-frame buffers are reused, not faulted in afresh, until the node gives them back.

Each check runs in a fresh interpreter: the allocator settings are process-wide and stay once made.
"""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

MEASURE = textwrap.dedent("""
    import resource
    import numpy as np
    from depth_kd_ros.memory import keep_frame_memory, release_free_memory

    def faults_per_frame(frames=40):
        np.ones(3 << 20, np.uint8)  # warm-up frame
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(frames):  # a 640x480 frame's depth CDR (3.6 MiB here) and image (0.9 MiB), written, freed
            depth, image = np.ones(1228800 * 3, np.uint8), np.ones(921600, np.uint8)
            del depth, image
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / frames

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    default = faults_per_frame()
    kept = keep_frame_memory()
    print(default, kept, faults_per_frame())
    big = [np.ones(20 << 20, np.uint8) for _ in range(10)]  # one 4K frame's worth, in heap-sized pieces
    del big
    held = rss_mb()
    release_free_memory()
    print(held, rss_mb())
""")


def test_freed_frame_buffers_are_kept_and_given_back_on_request():
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True)
    (default, kept, faults), (held, released) = (line.split() for line in out.stdout.splitlines())
    assert kept == "True"
    assert float(faults) < 1 < float(default), f"page faults per frame: {default} by default, {faults} kept"
    assert float(held) - float(released) > 150, f"RSS {held} MB with 200 MB freed, {released} MB after the release"
