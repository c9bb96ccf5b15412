"""The renderer's option names, importable without torch: the CLI builds its help from them, and
``depth-kd infer`` or ``eval`` should not wait seconds for torch to load just to list them. The modules that
implement each option agree with these (test_render.py checks)."""

FAMILY_NAMES = ("indoor", "indoor_large", "outdoor")  # families.FAMILIES
TRAJECTORIES = ("drive", "handheld")  # trajectory.make_trajectory
STORAGE_NAMES = ("mcap", "sqlite3")  # record.STORAGES
