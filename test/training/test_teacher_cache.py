"""The on-disk teacher cache: round trips, misses, corrupt entries, atomic writes, teacher calls saved."""

import logging
import warnings

import numpy as np
import pytest
import torch

from depth_kd.teachers import CacheKey, TeacherCache, predict_cached
from depth_kd.teachers.onnx import OnnxTeacher

KEY = CacheKey("office_2024-05-01", "/camera/color/image_raw", 1_714_550_400_123_456_789)


def _depth(seed=0, shape=(12, 16)):
    depth = np.random.default_rng(seed).uniform(0.3, 9.0, shape).astype(np.float32)
    depth[0, 0] = np.nan
    return depth


def test_round_trip_within_float16(tmp_path):
    cache = TeacherCache(tmp_path, "mff-abc")
    assert cache.get(KEY) is None
    depth = _depth()
    cache.put(KEY, depth)
    got = cache.get(KEY)
    assert got.dtype == np.float32 and got.shape == depth.shape
    np.testing.assert_allclose(got, depth, rtol=2**-11)  # float16 keeps 11 significant bits
    assert np.isnan(got[0, 0])
    assert not list(cache.path(KEY).parent.glob("*.tmp"))


def test_keys_and_teachers_are_separate(tmp_path):
    cache = TeacherCache(tmp_path, "mff-abc")
    cache.put(KEY, _depth())
    assert TeacherCache(tmp_path, "hf-other").get(KEY) is None
    assert cache.get(KEY._replace(stamp_ns=KEY.stamp_ns + 1)) is None
    assert cache.get(KEY._replace(topic="/other")) is None
    assert cache.get(KEY._replace(bag="other_bag")) is None
    assert cache.path(KEY) == TeacherCache(tmp_path, "mff-abc").path(KEY)  # stable across instances
    assert cache.path(KEY).parent.parent.name == "mff-abc"


def test_truncated_entry_is_a_miss_and_gets_rewritten(tmp_path, caplog):
    cache = TeacherCache(tmp_path, "mff-abc")
    cache.put(KEY, _depth())
    path = cache.path(KEY)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="depth_kd.teachers.cache"):
        assert cache.get(KEY) is None
    assert "unreadable cache entry" in caplog.text
    cache.put(KEY, _depth(1))
    np.testing.assert_allclose(cache.get(KEY), _depth(1), rtol=2**-11)


def test_entry_under_the_wrong_name_or_with_pickled_data_is_a_miss(tmp_path):
    cache = TeacherCache(tmp_path, "mff-abc")
    other = KEY._replace(stamp_ns=1)
    cache.put(other, _depth())
    cache.path(KEY).parent.mkdir(parents=True, exist_ok=True)
    cache.path(KEY).write_bytes(cache.path(other).read_bytes())  # e.g. a hash collision or a copied file
    assert cache.get(KEY) is None

    with open(cache.path(KEY), "wb") as f:
        np.savez(f, depth=np.array([{"not": "an array"}], dtype=object), key=np.array("x"))
    assert cache.get(KEY) is None  # np.load(allow_pickle=False) refuses object arrays


def test_a_failed_write_keeps_the_old_entry_and_leaves_no_temp_file(tmp_path, monkeypatch):
    cache = TeacherCache(tmp_path, "mff-abc")
    cache.put(KEY, _depth(0))

    def killed(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put(KEY, _depth(1))
    monkeypatch.undo()
    np.testing.assert_allclose(cache.get(KEY), _depth(0), rtol=2**-11)
    assert [p.name for p in cache.path(KEY).parent.iterdir()] == [cache.path(KEY).name]


class CountingOnnxTeacher(OnnxTeacher):
    """A real ONNX teacher that counts how many images it was run on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def _predict(self, rgb):
        self.calls.append(len(rgb))
        return super()._predict(rgb)


@pytest.fixture
def teacher(tmp_path):
    path = tmp_path / "mean.onnx"

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1, keepdim=True).abs() + 0.5

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Mean(), (torch.rand(1, 3, 32, 32),), str(path), input_names=["image"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    return CountingOnnxTeacher(path, "metric")


def test_predict_cached_runs_the_teacher_only_on_misses(tmp_path, teacher):
    cache = TeacherCache(tmp_path / "cache", teacher.cache_id)
    rgb = torch.rand(4, 3, 32, 48)
    keys = [KEY._replace(stamp_ns=i) for i in range(4)]

    first = predict_cached(teacher, cache, keys[:3], rgb[:3])
    assert teacher.calls == [3]
    direct = teacher.predict(rgb).numpy()
    teacher.calls.clear()
    np.testing.assert_array_equal(first.numpy(), direct[:3].astype(np.float16).astype(np.float32))

    again = predict_cached(teacher, cache, [keys[3], keys[0], keys[2], keys[1]], rgb[[3, 0, 2, 1]])
    assert teacher.calls == [1]  # only keys[3] was new
    np.testing.assert_array_equal(again[1:].numpy(), first[[0, 2, 1]].numpy())

    predict_cached(teacher, cache, keys, rgb)
    assert teacher.calls == [1]  # everything cached: the teacher is not run at all


def test_predict_cached_checks_teacher_and_image_size(tmp_path, teacher):
    with pytest.raises(ValueError, match="cache is for teacher"):
        predict_cached(teacher, TeacherCache(tmp_path, "someone-else"), [KEY], torch.rand(1, 3, 32, 32))
    cache = TeacherCache(tmp_path, teacher.cache_id)
    predict_cached(teacher, cache, [KEY], torch.rand(1, 3, 32, 32))
    out = predict_cached(teacher, cache, [KEY], torch.rand(1, 3, 64, 64))  # same key, other size: recompute
    assert out.shape == (1, 1, 64, 64) and teacher.calls == [1, 1]
