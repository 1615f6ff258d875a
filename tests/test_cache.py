import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from aminet.data import cache as cache_mod
from aminet.data import synthetic
from aminet.data.cache import ImageCache, dataset_files
from aminet.data.images import ImageDecodeError, load_images


@pytest.fixture()
def root(tmp_path):
    return synthetic.generate("sysu", tmp_path / "SYSU-MM01", ids=8, images=2, seed=3, workers=1)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_build_then_reuse(root, tmp_path):
    c = ImageCache.open(root, 48, 24, cache_dir=tmp_path / "c", progress=False)
    files = dataset_files(root)
    assert c.images.shape == (len(files), 48, 24, 3) and isinstance(c.images, np.memmap)
    assert not c.images.flags.writeable
    some = [str(files[i]) for i in (0, 7, 3)]
    np.testing.assert_array_equal(c.load(some), load_images(some, 48, 24))
    again = ImageCache.open(root, 48, 24, cache_dir=tmp_path / "c", progress=False)
    assert again.folder == c.folder and _entries(tmp_path / "c") == [c.folder.name]
    # a different size is a different cache
    other = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    assert other.folder != c.folder


def test_key_follows_the_source_files(root, tmp_path):
    c = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    f = dataset_files(root)[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    assert d.folder != c.folder


def test_interrupted_build_leaves_nothing_that_looks_valid(root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cache_mod.load_image

    def flaky(path, h, w):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(path, h, w)

    monkeypatch.setattr(cache_mod, "load_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False, workers=1)
    assert _entries(tmp_path / "c") == []  # no final folder, no temporary left
    monkeypatch.setattr(cache_mod, "load_image", real)
    c = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    assert c.images.shape[0] == len(dataset_files(root))


def test_truncated_cache_is_rebuilt(root, tmp_path, capsys):
    c = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    reference = np.array(c.images)
    array = c.folder / "images.npy"
    del c
    with open(array, "r+b") as fh:
        fh.truncate(array.stat().st_size // 2)
    d = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    assert "damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(np.array(d.images), reference)
    (d.folder / "index.json").write_text("{not json")
    e = ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(np.array(e.images), reference)


def test_corrupt_image_names_the_file_and_writes_nothing(root, tmp_path):
    bad = dataset_files(root)[4]
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ImageDecodeError) as err:
        ImageCache.open(root, 32, 16, cache_dir=tmp_path / "c", progress=False)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg
    assert _entries(tmp_path / "c") == []


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a SYSU-MM01 layout"):
        ImageCache.open(tmp_path / "empty", 32, 16, cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        ImageCache.open(tmp_path / "missing", 32, 16, cache_dir=tmp_path / "c")


_READER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from aminet.data.cache import ImageCache

    def mapping_stats(name):
        out, inside = {}, False
        for line in open("/proc/self/smaps"):
            if not line[0].isupper() and len(line.split()) >= 5 and "-" in line.split()[0]:
                inside = line.rstrip().endswith(name)
                continue
            if inside and line.split()[0].rstrip(":") in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                k = line.split()[0].rstrip(":")
                out[k] = out.get(k, 0) + int(line.split()[1]) * 1024
        return out

    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    root, cache_dir, ready, go = sys.argv[1:5]
    a0 = anon()
    c = ImageCache.open(root, 96, 48, cache_dir=cache_dir, progress=False)
    total = int(np.asarray(c.images.sum(dtype=np.uint64)))  # touch every page
    open(ready, "w").close()
    while not __import__("os").path.exists(go):
        time.sleep(0.05)
    s = mapping_stats("images.npy")
    print(c.images.nbytes, s["Rss"], s["Pss"], s["Private_Clean"] + s["Private_Dirty"], anon() - a0, total)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_two_processes_share_the_cache_pages(tmp_path):
    root = synthetic.generate("sysu", tmp_path / "S", ids=30, images=6, seed=4)
    ImageCache.open(root, 96, 48, cache_dir=tmp_path / "c", progress=False)  # build once
    script = tmp_path / "reader.py"
    script.write_text(_READER)
    go = tmp_path / "go"
    procs = []
    for k in range(2):
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(root), str(tmp_path / "c"), str(tmp_path / f"ready{k}"), str(go)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    import time

    deadline = time.time() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    stats = [list(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    for nbytes, rss, pss, private, anon_growth, total in stats:
        assert rss >= 0.9 * nbytes  # every page was read, through the file mapping ...
        assert anon_growth <= 0.1 * nbytes  # ... and no process made a copy in anonymous memory
    # The kernel sees the pages as shared. Recent kernels account large page-cache folios
    # approximately in smaps (one process may see them as shared, the other as private), so the
    # check asks that at least one process is charged about half, not that both are.
    assert min(pss for _, _, pss, _, _, _ in stats) <= 0.6 * stats[0][0]
    assert stats[0][5] == stats[1][5]


def test_the_fingerprint_sees_moved_identities_and_replaced_pictures_but_not_copies(root, tmp_path):
    """Issue 38: an identity moved between train_id.txt and val_id.txt (equal byte sizes) and a picture replaced
    by another of the same size each change the dataset fingerprint; a copy with other modification times
    does not. The images' digest is kept once per machine and data (a second call reads no image)."""
    import shutil

    from aminet.data.cache import dataset_fingerprint

    cache = tmp_path / "c"
    before = dataset_fingerprint(root, cache)
    assert len(list((cache / "content").iterdir())) == 1  # the images' digest, kept

    copy = tmp_path / "copy" / root.name
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # new modification times
    assert dataset_fingerprint(copy, cache) == before

    train, val = copy / "exp" / "train_id.txt", copy / "exp" / "val_id.txt"
    t, v = train.read_text().strip().split(","), val.read_text().strip().split(",")
    same = next((i, j) for i, a in enumerate(t) for j, b in enumerate(v) if len(a) == len(b))
    (i, j) = same
    t[i], v[j] = v[j], t[i]  # one identity each way: both files keep their byte sizes
    size = (train.stat().st_size, val.stat().st_size)
    train.write_text(",".join(t) + "\n")
    val.write_text(",".join(v) + "\n")
    assert (train.stat().st_size, val.stat().st_size) == size
    moved = dataset_fingerprint(copy, cache)
    assert moved != before

    picture = dataset_files(copy)[0]
    data = bytearray(picture.read_bytes())
    data[len(data) // 2] ^= 0xFF  # another picture of the same size
    picture.write_bytes(bytes(data))
    replaced = dataset_fingerprint(copy, cache)
    assert replaced not in (before, moved)

    # the kept digest is what later calls use (no image read again while names, sizes and times are unchanged)
    shutil.rmtree(cache / "content")
    assert dataset_fingerprint(root, cache) == before
    (memo,) = (cache / "content").iterdir()
    memo.write_text("0" * 64 + "\n")
    assert dataset_fingerprint(root, cache) != before
