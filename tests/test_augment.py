import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aminet.data.augment import DeviceAugment, normalize, upper_view


def _images(b=6, h=32, w=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_identity_when_everything_is_off():
    aug = DeviceAugment(upper_body_ratio=0.5, upper_height=16, pad=0, flip_p=0, erase_p=0, channel_aug_p=0)
    x = _images()
    full, upper = aug(x, True, _gen())
    torch.testing.assert_close(full, normalize(x))
    torch.testing.assert_close(upper, normalize(x)[:, :, :16])
    assert full.is_contiguous(memory_format=torch.channels_last)
    assert upper.shape == (6, 3, 16, 16)


def test_deterministic_under_seed_and_random_per_sample():
    aug = DeviceAugment(upper_height=16)
    x = _images(8)
    a = aug(x, True, _gen(3))
    b = aug(x, True, _gen(3))
    c = aug(x, True, _gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    same = x[:1].repeat(8, 1, 1, 1)  # eight copies of one image
    out, _ = aug(same, True, _gen(0))
    distinct = {out[i].numpy().tobytes() for i in range(8)}
    assert len(distinct) >= 6


def test_crop_and_flip_are_a_shifted_or_mirrored_window():
    h, w, p = 12, 8, 2
    aug = DeviceAugment(upper_body_ratio=1.0, upper_height=h, pad=p, flip_p=0.5, erase_p=0, channel_aug_p=0)
    x = _images(16, h, w, seed=1)
    full, _ = aug(x, False, _gen(5))
    ref = F.pad(normalize(x), (p, p, p, p), value=0.0)
    padded_u8 = F.pad(x.permute(0, 3, 1, 2), (p, p, p, p))
    zero = normalize(torch.zeros(1, 1, 1, 3, dtype=torch.uint8))[0, :, 0, 0]
    flips = 0
    for b in range(16):
        found = False
        for flip in (False, True):
            for oy in range(2 * p + 1):
                for ox in range(2 * p + 1):
                    win = normalize(padded_u8[b : b + 1, :, oy : oy + h, ox : ox + w].permute(0, 2, 3, 1))[0]
                    if flip:
                        win = win.flip(2)
                    if torch.allclose(full[b], win, atol=1e-5):
                        found, flips = True, flips + flip
        assert found, f"sample {b} is not a (mirrored) window of the padded image"
    assert 0 < flips < 16
    del ref, zero


def test_channel_augmentation_only_on_visible():
    aug = DeviceAugment(upper_height=16, pad=0, flip_p=0, erase_p=0, channel_aug_p=1.0)
    x = _images(12)
    vis, _ = aug(x, True, _gen())
    raw = vis * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(
        1, 3, 1, 1
    )
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 1], raw[:, 2], atol=1e-5)
    ir, _ = aug(x, False, _gen())
    torch.testing.assert_close(ir, normalize(x))
    mixed, _ = aug(x, torch.tensor([True, False] * 6), _gen())
    torch.testing.assert_close(mixed[1::2], normalize(x)[1::2])


def test_random_erasing_rectangles():
    h, w = 40, 20
    aug = DeviceAugment(upper_height=20, pad=0, flip_p=0, erase_p=1.0, channel_aug_p=0)
    x = torch.full((16, h, w, 3), 255, dtype=torch.uint8)  # white: normalised value far from 0
    full, upper = aug(x, True, _gen(1))
    for b in range(16):
        erased = (full[b] == 0).all(dim=0)
        rows, cols = torch.nonzero(erased, as_tuple=True)
        assert len(rows) > 0
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows)  # a filled rectangle
        assert 0.02 * h * w - 2 * (h + w) <= box <= 0.4 * h * w + 2 * (h + w)
    # the upper view is cut from the erased image
    torch.testing.assert_close(upper, full[:, :, :20])


def test_upper_view_ratio_and_resize():
    x = normalize(_images(2, 40, 20))
    u = upper_view(x, 0.6, 20)
    ref = F.interpolate(x[:, :, :24], size=(20, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(u, ref)
    with pytest.raises(ValueError, match="upper_body_ratio 0"):
        upper_view(x, 0, 20)


def test_rejects_wrong_input():
    aug = DeviceAugment()
    with pytest.raises(ValueError, match="expected uint8"):
        aug(torch.zeros(2, 3, 8, 4), True, _gen())


def test_the_structure_views_leave_the_augmented_views_exactly_as_without_them():
    """With ``structure`` one gather of the replicate-padded image serves both views; the backbone's views
    must stay bit for bit those of the zero-padded path (crop, flip, channel mix and erasing all on)."""
    augment = DeviceAugment(pad=5, flip_p=0.5, erase_p=0.7, channel_aug_p=0.8)
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (12, 32, 16, 3), dtype=torch.uint8, generator=g)
    visible = torch.arange(12) % 2 == 0
    d = augment.draw(12, 32, 16, visible, g)
    plain = augment.apply(images, d)
    full, upper, clean, clean_upper = augment.apply(images, d, structure=True)
    assert d["chosen"].numel() and d["erase"]  # the draw exercised the channel mix and the erasing
    assert torch.equal(full, plain[0]) and torch.equal(upper, plain[1])
    # the clean view: the same crop of the border-replicated image, unerased
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (5, 5, 5, 5), mode="replicate")
    b = torch.arange(12)[:, None, None]
    crop = padded.permute(0, 2, 3, 1)[b, d["rows"][:, :, None], d["cols"][:, None, :]].permute(0, 3, 1, 2)
    keep = torch.ones(12, dtype=torch.bool)
    keep[d["chosen"]] = False
    torch.testing.assert_close(clean[keep], normalize(crop.round().to(torch.uint8).permute(0, 2, 3, 1))[keep])
