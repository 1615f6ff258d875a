import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aminet.data import regdb, synthetic, sysu
from aminet.data.images import load_images
from aminet.evaluation import sysu_metrics


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    return synthetic.generate("sysu", tmp_path_factory.mktemp("syn") / "SYSU-MM01", ids=30, images=3, seed=1)


@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    return synthetic.generate("regdb", tmp_path_factory.mktemp("syn") / "RegDB", ids=12, images=10, seed=1)


def test_sysu_layout_and_splits(sysu_root):
    splits = {s: sysu.read_ids(sysu_root, s) for s in ("train", "val", "test")}
    all_ids = [i for ids in splits.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 30  # disjoint, complete
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (18, 6, 6)  # 296/99/96 of 491
    text = (sysu_root / "exp" / "test_id.txt").read_text()
    assert text.count("\n") == 1 and "," in text  # one comma-separated line, as released
    present = {}
    for cam_dir in sysu_root.glob("cam*"):
        cam = int(cam_dir.name[3:])
        for pid_dir in cam_dir.iterdir():
            assert len(pid_dir.name) == 4 and pid_dir.name.isdigit()
            present.setdefault(int(pid_dir.name), set()).add(cam)
            assert all(f.suffix == ".jpg" and len(f.stem) == 4 for f in pid_dir.iterdir())
    assert set(present) == set(all_ids)
    for cams in present.values():
        assert cams & {1, 2, 4, 5} and cams & {3, 6}  # both modalities for every identity
    assert any(len(c) < 6 for c in present.values())  # not every identity in every camera
    manifest = json.loads((sysu_root / "SYNTHETIC.json").read_text())
    assert manifest["layout"] == "sysu" and manifest["ids"] == 30


def test_infrared_is_three_identical_channels_and_visible_is_colour(sysu_root):
    ir = np.asarray(Image.open(next((sysu_root / "cam3").rglob("*.jpg"))).convert("RGB")).astype(int)
    # JPEG chroma rounding may leave +-1 between channels of a gray image
    assert np.abs(ir[..., 0] - ir[..., 1]).max() <= 2 and np.abs(ir[..., 0] - ir[..., 2]).max() <= 2
    vis = np.asarray(Image.open(next((sysu_root / "cam1").rglob("*.jpg"))).convert("RGB")).astype(int)
    assert np.abs(vis[..., 0] - vis[..., 2]).mean() > 5


def test_regdb_layout(regdb_root):
    for t in range(1, 11):
        train, test = regdb.split(regdb_root, t, "train"), regdb.split(regdb_root, t, "test")
        for part in (train, test):
            assert len(part.visible[0]) == len(part.thermal[0]) == 6 * 10
            assert all(Path(p).is_file() for p in part.visible[0] + part.thermal[0])
        assert not set(train.visible[1].tolist()) & set(test.visible[1].tolist())
    splits = {tuple(sorted(set(regdb.split(regdb_root, t, "test").visible[1].tolist()))) for t in range(1, 11)}
    assert len(splits) > 1  # trials differ
    for folder in ("Visible", "Thermal"):
        ids = sorted(int(p.name) for p in (regdb_root / folder).iterdir())
        assert ids == list(range(1, 13))
        assert all(len(list(p.glob("*.bmp"))) == 10 for p in (regdb_root / folder).iterdir())


def test_generation_is_deterministic(tmp_path):
    a = synthetic.generate("sysu", tmp_path / "a", ids=8, images=1, seed=5, workers=1)
    b = synthetic.generate("sysu", tmp_path / "b", ids=8, images=1, seed=5, workers=2)
    c = synthetic.generate("sysu", tmp_path / "c", ids=8, images=1, seed=6, workers=1)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert (a / "exp" / "test_id.txt").read_text() != (c / "exp" / "test_id.txt").read_text() or any(
        (a / f).read_bytes() != (c / f).read_bytes() for f in files_a if (c / f).is_file()
    )


def test_colour_histograms_cannot_match_infrared_to_visible(sysu_root):
    """Colour statistics carry identity within the visible modality but not across modalities."""
    ids = sum((sysu.read_ids(sysu_root, s) for s in ("train", "val", "test")), [])
    q_paths, q_pids, q_cams = sysu.images_of(sysu_root, ids, (3, 6))
    g_paths, g_pids, g_cams = sysu.images_of(sysu_root, ids, (1, 2, 4, 5))

    def hist(paths, bins=8):
        x = load_images(paths, 128, 64) // (256 // bins)
        code = (x[..., 0].astype(int) * bins + x[..., 1]) * bins + x[..., 2]
        h = np.stack([np.bincount(c.ravel(), minlength=bins**3) for c in code]).astype(np.float64)
        return h / h.sum(1, keepdims=True)

    hq, hg = hist(q_paths), hist(g_paths)
    l1 = lambda a, b: np.abs(a[:, None] - b[None]).sum(-1)
    chance = 1 / len(ids)
    cmc, mAP, _ = sysu_metrics(l1(hq, hg), q_pids, g_pids, q_cams, g_cams)
    assert cmc[0] < 3 * chance, f"IR->VIS colour matcher R1 {cmc[0]:.3f} vs chance {chance:.3f}"
    # The same matcher within the visible modality (indoor queries, outdoor gallery) does better.
    indoor, outdoor = np.isin(g_cams, [1, 2]), np.isin(g_cams, [4, 5])
    cmc_v, _, _ = sysu_metrics(
        l1(hg[indoor], hg[outdoor]), g_pids[indoor], g_pids[outdoor], np.full(indoor.sum(), 6), g_cams[outdoor]
    )
    assert cmc_v[0] > cmc[0] + chance


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layout", "market", "--out", "{tmp}/x"], "invalid choice: 'market'"),
        (["--layout", "sysu", "--out", "{tmp}/x", "--ids", "3"], "need at least 6 identities"),
        (["--layout", "regdb", "--out", "{tmp}/x", "--ids", "7"], "even number"),
        (["--layout", "sysu", "--out", "{tmp}/x", "--ids", "abc"], "invalid int value"),
        (["--layout", "sysu", "--out", "{tmp}/full", "--ids", "6"], "exists and is not empty"),
        (["--layout", "sysu", "--out", "{tmp}/x", "--ids", "6", "--height", "4"], "image size"),
    ],
)
def test_cli_bad_input(tmp_path, args, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    out = subprocess.run(
        [sys.executable, "-m", "aminet.data.synthetic", *[a.format(tmp=tmp_path) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()
    assert (tmp_path / "full" / "keep.txt").is_file()


def test_cli_writes_a_layout(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aminet.data.synthetic",
            "--layout",
            "regdb",
            "--out",
            str(tmp_path / "r"),
            "--ids",
            "4",
            "--images",
            "2",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 16 images" in out.stdout
    assert len(regdb.split(tmp_path / "r", 10, "test").visible[0]) == 4


def test_embedded_default_is_generated_once_and_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AMINET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(synthetic.DEFAULTS, "regdb", {"ids": 4, "images": 2, "height": 32, "width": 16})
    root = synthetic.ensure_default("regdb")
    err = capsys.readouterr().err
    assert "GENERATING the SYNTHETIC regdb benchmark" in err and "--data-root" in err
    assert root.is_relative_to(tmp_path / "cache") and (root / "idx").is_dir()
    mtime = (root / "SYNTHETIC.json").stat().st_mtime_ns
    assert synthetic.ensure_default("regdb") == root
    err = capsys.readouterr().err
    assert "using the SYNTHETIC regdb benchmark" in err and "--data-root" in err
    assert (root / "SYNTHETIC.json").stat().st_mtime_ns == mtime


def test_version_3_stays_generable_and_version_4_adds_its_cues(tmp_path):
    """Issue 13: the v4 cues (head-shoulder, lower-body occlusion, illumination) are added on their own
    random streams, so v3 is still generated; the two differ in pixels, not in layout."""
    v3 = synthetic.generate("regdb", tmp_path / "v3", ids=4, images=2, seed=2, version=3, workers=1)
    v4 = synthetic.generate("regdb", tmp_path / "v4", ids=4, images=2, seed=2, workers=1)
    assert json.loads((v3 / "SYNTHETIC.json").read_text())["version"] == 3
    assert json.loads((v4 / "SYNTHETIC.json").read_text())["version"] == synthetic.GENERATOR_VERSION == 4
    files3 = sorted(p.relative_to(v3) for p in v3.rglob("*.bmp"))
    assert files3 == sorted(p.relative_to(v4) for p in v4.rglob("*.bmp"))
    differ = [not np.array_equal(np.asarray(Image.open(v3 / f)), np.asarray(Image.open(v4 / f))) for f in files3]
    assert all(differ)
    again = synthetic.generate("regdb", tmp_path / "v3b", ids=4, images=2, seed=2, version=3, workers=1)
    assert all(np.array_equal(np.asarray(Image.open(v3 / f)), np.asarray(Image.open(again / f))) for f in files3)
    assert synthetic.default_root("sysu", version=3).name.endswith("-v3")
    with pytest.raises(ValueError, match="version 5"):
        synthetic.generate("regdb", tmp_path / "v5", ids=4, version=5)
