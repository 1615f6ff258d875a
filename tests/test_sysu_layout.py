import os
import random
from pathlib import Path

import pytest
from layouts import write_sysu

from aminet.data import sysu


@pytest.fixture()
def root(tmp_path):
    return write_sysu(tmp_path / "SYSU-MM01", test=(9, 5, 12, 7), missing={(5, 6), (7, 2), (12, 4)})


def _reference_gallery(root: Path, cams, trial):
    """The community's construction, spelled out with the global ``random`` as the public code does."""
    ids = open(root / "exp" / "test_id.txt").read().splitlines()[0].split(",")
    ids = ["%04d" % int(y) for y in ids]  # noqa: UP031 - spelled as the public code spells it
    random.seed(trial)
    out = []
    for pid in sorted(ids):
        for cam in cams:
            d = os.path.join(root, f"cam{cam}", pid)
            if os.path.isdir(d):
                files = sorted(os.path.join(d, f) for f in os.listdir(d))
                out.append(random.choice(files))
    return out


def test_query_order_and_content(root):
    paths, pids, cams = sysu.query_set(root)
    expected = []
    for pid in (5, 7, 9, 12):
        for cam in (3, 6):
            d = root / f"cam{cam}" / f"{pid:04d}"
            if d.is_dir():
                expected += sorted(str(p) for p in d.iterdir())
    assert paths == expected
    assert list(pids) == [sysu.parse_path(p)[0] for p in paths]
    assert set(cams.tolist()) == {3, 6}
    assert not any(p for p, c in zip(pids, cams) if p == 5 and c == 6)  # (5, cam6) is missing
    assert list(pids) == sorted(pids)


@pytest.mark.parametrize("mode, cams", [("all", (1, 2, 4, 5)), ("indoor", (1, 2))])
def test_gallery_matches_the_community_draw_for_every_trial(root, mode, cams):
    state = random.getstate()
    for trial in range(10):
        paths, pids, g_cams = sysu.gallery_set(root, mode, trial)
        assert paths == _reference_gallery(root, cams, trial)
        assert set(g_cams.tolist()) <= set(cams)
        # one draw per existing (id, camera) folder, in id then camera order
        keys = list(zip(pids.tolist(), g_cams.tolist()))
        assert keys == sorted(keys) and len(keys) == len(set(keys))
    random.setstate(state)


def test_gallery_is_deterministic_and_leaves_global_random_alone(root):
    random.seed(1234)
    before = random.random()
    random.seed(1234)
    a = sysu.gallery_set(root, "all", 3)
    assert random.random() == before  # the draw did not consume the global stream
    b = sysu.gallery_set(root, "all", 3)
    assert a[0] == b[0]
    draws = {tuple(sysu.gallery_set(root, "all", t)[0]) for t in range(10)}
    assert len(draws) > 1  # trials differ


def test_multishot_gallery(root):
    paths, pids, cams = sysu.gallery_set(root, "all", 0, shots=10)
    folders = {(p, c) for p, c in zip(pids.tolist(), cams.tolist())}
    total = sum(len(sysu.camera_images(root, c, p)) for p, c in folders)
    assert len(paths) == total == len(set(paths))  # fewer than 10 files -> all of them


def test_indoor_is_a_camera_subset(root):
    all_keys = set(zip(*sysu.gallery_set(root, "all", 0)[1:]))
    indoor = set(zip(*sysu.gallery_set(root, "indoor", 0)[1:]))
    assert {c for _, c in indoor} <= {1, 2}
    assert {k for k in all_keys if k[1] in (1, 2)} == indoor


def test_bad_input(tmp_path, root):
    with pytest.raises(ValueError, match="mode 'outdoor'"):
        sysu.gallery_set(root, "outdoor", 0)
    with pytest.raises(ValueError, match="shots"):
        sysu.gallery_set(root, "all", 0, shots=3)
    (root / "exp" / "test_id.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_id.txt"):
        sysu.query_set(root)
    with pytest.raises(FileNotFoundError, match="root not found"):
        sysu.query_set(tmp_path / "nope")
    (root / "exp" / "test_id.txt").write_text("1,2,x\n")
    with pytest.raises(ValueError, match="'x' is not an integer"):
        sysu.gallery_set(root, "all", 0)
    (root / "exp" / "test_id.txt").write_text("\n")
    with pytest.raises(ValueError, match="no identities"):
        sysu.query_set(root)
    (root / "exp" / "test_id.txt").write_text("404\n")
    with pytest.raises(ValueError, match="empty"):
        sysu.gallery_set(root, "all", 0)


def test_parse_path_uses_components_not_offsets():
    assert sysu.parse_path("/data/some/deeper/SYSU/cam3/0012/0007.jpg") == (12, 3)
    assert sysu.parse_path("cam6/0491/0001.jpg") == (491, 6)
    with pytest.raises(ValueError, match="not a SYSU-MM01 image path"):
        sysu.parse_path("/data/Visible/12/x.bmp")


def test_listed_identities_are_read_once_per_unchanged_split_files(root, monkeypatch):
    calls = []
    real = sysu.camera_images
    monkeypatch.setattr(sysu, "camera_images", lambda *a: calls.append(a) or real(*a))
    sysu.check_listed_identities(root)
    first = len(calls)
    assert first > 0
    sysu.check_listed_identities(root)  # the preflight's second visit (data check, then test check)
    assert len(calls) == first
    # an edited split file is read again: a listed identity without images is caught
    (root / "exp" / "test_id.txt").write_text("5,7,9,12,404\n")
    with pytest.raises(ValueError, match=r"test_id.txt: 1 listed identity has no image in any camera \(first: 404"):
        sysu.check_listed_identities(root)
