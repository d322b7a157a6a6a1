"""Build caches are written atomically: readers never see a torn file, no temporary file is left behind."""

import numpy as np
import pytest

from training.cache import save_npz_atomic


def test_save_npz_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "cache.npz"
    save_npz_atomic(path, a=np.arange(3))
    save_npz_atomic(path, a=np.arange(5))
    with np.load(path) as data:
        assert data["a"].tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


class Unstorable:
    def __array__(self, *args, **kwargs):
        raise RuntimeError("disk full")


def test_a_failed_write_keeps_the_old_cache(tmp_path):
    path = tmp_path / "cache.npz"
    save_npz_atomic(path, a=np.arange(3))
    with pytest.raises(RuntimeError):
        save_npz_atomic(path, a=Unstorable())
    with np.load(path) as data:
        assert data["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
