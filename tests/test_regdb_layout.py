import pytest
from layouts import write_regdb

from aminet.data import regdb


def test_split_reads_both_index_files(tmp_path):
    root = write_regdb(tmp_path / "RegDB")
    s = regdb.split(root, 1, "test")
    assert s.trial == 1 and s.part == "test"
    v_paths, v_pids = s.visible
    t_paths, t_pids = s.thermal
    assert len(v_paths) == len(t_paths) == 12
    assert all(p.startswith(str(root)) for p in v_paths + t_paths)
    assert all("/Visible/" in p for p in v_paths) and all("/Thermal/" in p for p in t_paths)
    assert set(v_pids.tolist()) == set(t_pids.tolist())
    train = regdb.split(root, 1, "train")
    assert not set(train.visible[1].tolist()) & set(v_pids.tolist())  # disjoint identities
    assert regdb.split(root, 2, "test").visible[0] != v_paths  # trials differ


def test_bad_input(tmp_path):
    root = write_regdb(tmp_path / "RegDB", trials=(1,))
    with pytest.raises(FileNotFoundError, match="test_visible_2.txt"):
        regdb.split(root, 2, "test")
    with pytest.raises(ValueError, match="trial 11"):
        regdb.split(root, 11, "test")
    with pytest.raises(ValueError, match="part 'val'"):
        regdb.split(root, 1, "val")
    (root / "idx" / "test_thermal_1.txt").write_text("Thermal/0/t_0_0.bmp\n")
    with pytest.raises(ValueError, match=r"test_thermal_1.txt:1: expected"):
        regdb.split(root, 1, "test")
    (root / "idx" / "test_thermal_1.txt").write_text("")
    with pytest.raises(ValueError, match="lists no images"):
        regdb.split(root, 1, "test")
    (root / "idx" / "test_thermal_1.txt").write_text("Thermal/0/t_0_0.bmp zero\n")
    with pytest.raises(ValueError, match="label 'zero'"):
        regdb.split(root, 1, "test")
