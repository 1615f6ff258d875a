"""A synthetic VI-ReID benchmark: procedurally rendered people in the SYSU-MM01 and RegDB layouts.

    python -m aminet.data.synthetic --layout sysu --out DIR --ids 60 --seed 0
    python -m aminet.data.synthetic --layout regdb --out DIR --ids 40 --seed 0
    python -m aminet.data.synthetic --layout llcm --out DIR --ids 60 --seed 0     # low-light visible images

An *identity* fixes body shape and proportions, head and hair, clothing (colour, material, texture:
plain, stripes or a logo; trousers or shorts), and accessories (bag, backpack, hat). Each *image*
draws a pose (walking phase, arm swing), viewpoint (front, back, side), scale, translation,
illumination, background clutter and an occluder.

Visible cameras render colour under a camera-specific white balance. Infrared cameras render a
thermal-looking image: skin is hot, hair warm, clothing by *material* (independent of its colour),
accessories and background cool, with sensor blur, noise and automatic gain; stored as three identical
channels, as the real IR images are. Identity is thus shared across modalities through shape,
proportions, materials, textures and accessories, but not through colour: colour statistics alone
cannot match infrared to visible.

SYSU layout: ``cam1..cam6/<pid:04d>/<nnnn>.jpg`` (1, 2, 4, 5 visible; 3, 6 infrared; 1-3 indoor),
not every identity in every camera (at least one of each modality), and ``exp/{train,val,test}_id.txt``
in the official proportions (296 / 99 / 96 of 491). RegDB layout: ``Visible/<id>/*.bmp``,
``Thermal/<id>/*.bmp`` with 10 + 10 images per identity and ``idx/{train,test}_{visible,thermal}_{t}.txt``
for the 10 trials (half of the identities each).

Generation is deterministic in (layout, ids, seed, size, images) and written to a temporary folder
renamed into place, so an interrupted run never leaves a layout that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aminet.atomic import atomic_directory
from aminet.cli import ArgumentParser

__all__ = ["generate", "default_root", "ensure_default", "GENERATOR_VERSION", "VERSIONS", "DEFAULTS", "main"]

GENERATOR_VERSION = 4  # the default; 3 (no v4 cues) stays generable with version=3 / --version 3
VERSIONS = (3, 4)
DEFAULTS = {
    "sysu": {"ids": 100, "images": 6, "height": 128, "width": 64},
    "regdb": {"ids": 40, "images": 10, "height": 128, "width": 64},
    "llcm": {"ids": 60, "images": 4, "height": 128, "width": 64},
}
LLCM_VISIBLE = tuple(range(1, 10))
LLCM_INFRARED = (1, 2, 4, 5, 6, 7, 8, 9)
SYSU_VISIBLE = (1, 2, 4, 5)
SYSU_INFRARED = (3, 6)
INDOOR = (1, 2, 3)

# ------------------------------------------------------------------------------------------------
# Identity and image parameters
# ------------------------------------------------------------------------------------------------

# Clothing materials: each has a surface texture seen by visible cameras (whatever the dye) and a
# thermal signature seen by infrared ones (thin fabrics pass body heat, insulating or coated ones stay
# cool). Material is what links the two modalities; colour links nothing.
#            name        temp  texture      amplitude  period (share of person height)
MATERIALS = (
    ("cotton", 0.64, "plain", 0.00, 0.00),
    ("denim", 0.46, "diagonal", 0.18, 0.06),
    ("knit", 0.31, "checker", 0.20, 0.07),
    ("sport", 0.80, "ribs", 0.16, 0.05),
    ("leather", 0.20, "gloss", 0.30, 0.00),
)


@dataclass
class Person:
    height: float  # share of the image height at scale 1
    shoulder: float  # half-widths, as shares of the person's height
    hip: float
    leg_ratio: float  # share of the height below the hips
    head: float
    skin: np.ndarray
    skin_temp: float
    hair: np.ndarray
    long_hair: bool
    top: np.ndarray
    top_material: int
    top_temp: float
    texture: str  # plain | hstripes | vstripes | logo
    tex_colour: np.ndarray
    tex_material: int
    tex_temp: float
    stripe_period: float
    logo_shape: int
    bottom: np.ndarray
    bottom_material: int
    bottom_temp: float
    shorts: bool
    shoes: np.ndarray
    hat: np.ndarray | None
    bag: np.ndarray | None
    bag_side: int
    backpack: np.ndarray | None


@dataclass
class HeadShoulder:
    """Version 4: identity cues of the head-shoulder region that survive in thermal images, because they
    are shapes of warm and cool surfaces, not colours: hair style (warm, its outline), a collar (a
    v-neck or open collar shows hot skin, a hood or scarf is a cool fabric ring), glasses (glass blocks
    thermal radiation: a cold band across a hot face), neck length and shoulder slope (build)."""

    hair_style: str  # short | long | bun | bald | curly
    collar: str  # crew | vneck | hood | scarf | open
    collar_colour: np.ndarray
    collar_temp: float
    glasses: bool
    neck: float  # share of the person's height
    slope: float  # shoulder drop, share of the height
    occlusion_p: float  # how often this person's lower body is hidden (carries things, walks by railings)


def make_head_shoulder(rng: np.random.Generator) -> HeadShoulder:
    collar = str(rng.choice(["crew", "vneck", "hood", "scarf", "open"], p=[0.3, 0.2, 0.2, 0.15, 0.15]))
    m = int(rng.integers(0, len(MATERIALS)))
    return HeadShoulder(
        hair_style=str(rng.choice(["short", "long", "bun", "bald", "curly"], p=[0.35, 0.25, 0.15, 0.1, 0.15])),
        collar=collar,
        collar_colour=_colour(rng),
        collar_temp=_temp(m, rng),
        glasses=bool(rng.random() < 0.25),
        neck=rng.uniform(0.01, 0.035),
        slope=rng.uniform(0.0, 0.035),
        occlusion_p=rng.uniform(0.2, 0.5),
    )


def _colour(rng: np.random.Generator) -> np.ndarray:
    # Saturated or muted colours, spread over the whole cube so colour is a strong visible cue.
    c = rng.random(3)
    if rng.random() < 0.3:
        c = c * 0.35 + rng.random() * 0.3  # dark / muted
    return c


def _temp(material: int, rng: np.random.Generator) -> float:
    return float(MATERIALS[material][1] + rng.normal(0, 0.03))


def make_person(rng: np.random.Generator) -> Person:
    texture = rng.choice(["plain", "hstripes", "vstripes", "logo"], p=[0.35, 0.25, 0.15, 0.25])
    top_m = int(rng.integers(0, len(MATERIALS)))
    tex_m = int((top_m + rng.integers(1, len(MATERIALS))) % len(MATERIALS))  # a different material
    bottom_m = int(rng.choice([0, 1, 1, 2, 3, 4]))  # denim is common for trousers
    return Person(
        height=rng.uniform(0.78, 0.95),
        shoulder=rng.uniform(0.09, 0.15),
        hip=rng.uniform(0.07, 0.12),
        leg_ratio=rng.uniform(0.42, 0.52),
        head=rng.uniform(0.055, 0.075),
        skin=np.array([0.95, 0.76, 0.62]) * rng.uniform(0.45, 1.0) + rng.normal(0, 0.03, 3),
        skin_temp=rng.uniform(0.86, 0.97),
        hair=_colour(rng) * 0.4 if rng.random() < 0.8 else _colour(rng),
        long_hair=bool(rng.random() < 0.35),
        top=_colour(rng),
        top_material=top_m,
        top_temp=_temp(top_m, rng),
        texture=str(texture),
        tex_colour=_colour(rng),
        tex_material=tex_m,
        tex_temp=_temp(tex_m, rng),
        stripe_period=rng.uniform(0.05, 0.09),
        logo_shape=int(rng.integers(0, 3)),
        bottom=_colour(rng),
        bottom_material=bottom_m,
        bottom_temp=_temp(bottom_m, rng),
        shorts=bool(rng.random() < 0.25),
        shoes=_colour(rng) * 0.5,
        hat=_colour(rng) if rng.random() < 0.2 else None,
        bag=_colour(rng) if rng.random() < 0.3 else None,
        bag_side=int(rng.choice([-1, 1])),
        backpack=_colour(rng) if rng.random() < 0.3 else None,
    )


# ------------------------------------------------------------------------------------------------
# Soft-edged primitives on a pixel grid
# ------------------------------------------------------------------------------------------------


class Canvas:
    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.y, self.x = np.mgrid[0:h, 0:w].astype(np.float32)

    @staticmethod
    def soft(d: np.ndarray) -> np.ndarray:
        return np.clip(0.5 - d, 0.0, 1.0)  # signed distance (pixels) -> coverage

    def ellipse(self, cx, cy, rx, ry):
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        r = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return self.soft((r - 1.0) * min(rx, ry))

    def capsule(self, x0, y0, x1, y1, radius):
        px, py = self.x - x0, self.y - y0
        dx, dy = x1 - x0, y1 - y0
        t = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        d = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2) - radius
        return self.soft(d)

    def rect(self, x0, y0, x1, y1):
        d = np.maximum(np.maximum(x0 - self.x, self.x - x1), np.maximum(y0 - self.y, self.y - y1))
        return self.soft(d)

    def trapezoid(self, cx, y0, y1, w0, w1):
        t = np.clip((self.y - y0) / max(y1 - y0, 1e-6), 0, 1)
        half = w0 + (w1 - w0) * t
        d = np.maximum(np.abs(self.x - cx) - half, np.maximum(y0 - self.y, self.y - y1))
        return self.soft(d)


def _paint(img: np.ndarray, mask: np.ndarray, value) -> None:
    """Alpha-composite a colour (3,) or a per-pixel map (H, W[, C]) onto img (H, W, C) in place."""
    m = mask[..., None]
    img *= 1.0 - m
    img += m * value


# ------------------------------------------------------------------------------------------------
# Rendering one image
# ------------------------------------------------------------------------------------------------


# noqa on the next line: one drawing routine, kept whole on purpose: every image of the synthetic benchmark
# depends on the exact order of its random draws, so splitting it must be proven bit-exact (the benchmark's
# fingerprint names the data every result was measured on).
def _scene(  # noqa: C901
    person: Person,
    rng: np.random.Generator,
    h: int,
    w: int,
    infrared: bool,
    cam: int,
    hs: HeadShoulder | None = None,
    rng4: np.random.Generator | None = None,
) -> np.ndarray:
    cv = Canvas(h, w)
    indoor = cam in INDOOR
    # Background: camera base, floor, clutter.
    if infrared:
        img = np.full((h, w, 1), rng.uniform(0.12, 0.28), np.float32)
        img += (cv.y / h)[..., None] * rng.uniform(-0.05, 0.08)
        shade = lambda: np.array([rng.uniform(0.05, 0.45) if rng.random() < 0.8 else rng.uniform(0.5, 0.75)])
    else:
        base = np.array([0.62, 0.6, 0.55]) if indoor else np.array([0.45, 0.55, 0.42])
        base = np.clip(base + rng.normal(0, 0.08, 3), 0, 1)
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
        floor = np.clip(base * rng.uniform(0.5, 0.9), 0, 1)
        _paint(img, cv.rect(-5, h * rng.uniform(0.75, 0.9), w + 5, h + 5), floor)
        shade = lambda: rng.random(3)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(3, w * 0.35), rng.uniform(3, h * 0.3)
        m = cv.rect(cx - sx, cy - sy, cx + sx, cy + sy) if rng.random() < 0.6 else cv.ellipse(cx, cy, sx, sy)
        _paint(img, m, shade())
    if rng4 is not None:  # v4 clutter: a grid of windows / tiles / shelves and a passer-by's silhouette
        period, duty = rng4.uniform(6, 16), rng4.uniform(0.2, 0.6)
        grid = (np.sin(2 * np.pi * cv.x / period) > 1 - 2 * duty) & (np.sin(2 * np.pi * cv.y / (1.3 * period)) > 0)
        _paint(img, grid.astype(np.float32) * rng4.uniform(0.3, 0.7), shade())
        if rng4.random() < 0.4:
            side = rng4.choice([-1, 1])
            px = w / 2 + side * rng4.uniform(0.45, 0.6) * w
            _paint(img, cv.capsule(px, h * 0.25, px, h * 0.95, w * rng4.uniform(0.12, 0.2)), shade())

    # Geometry of this view.
    scale = rng.uniform(0.85, 1.05)
    ph = person.height * h * scale
    cx = w / 2 + rng.normal(0, w * 0.05)
    top = (h - ph) / 2 + rng.normal(0, h * 0.03)
    crop_low = rng4 is not None and rng4.random() < 0.5 * hs.occlusion_p
    if crop_low:  # a detection box cut at the image edge: the lower legs are out of the frame
        top += rng4.uniform(0.15, 0.3) * ph
    view = rng.choice(["front", "back", "side"], p=[0.4, 0.35, 0.25])
    narrow = 0.6 if view == "side" else 1.0
    phase = rng.uniform(-1, 1)  # walking phase
    head_r = person.head * ph
    head_cy = top + head_r * 1.1
    sh_y = top + 0.17 * ph + (hs.neck * ph if hs is not None else 0.0)
    hip_y = top + (1.0 - person.leg_ratio) * ph
    foot_y = top + ph
    sh_w = person.shoulder * ph * narrow
    hip_w = person.hip * ph * narrow
    limb = max(1.0, 0.035 * ph)

    def col(rgb: np.ndarray, temp: float) -> np.ndarray:
        return np.array([temp], np.float32) if infrared else np.clip(rgb, 0, 1).astype(np.float32)

    def material(rgb: np.ndarray, temp: float, m: int) -> np.ndarray:
        """A fabric: its thermal value in infrared; its dye plus its surface texture in visible."""
        if infrared:
            return np.array([temp], np.float32)
        _, _, kind, amp, period = MATERIALS[m]
        per = max(2.5, period * ph)
        if kind == "plain":
            return np.clip(rgb, 0, 1).astype(np.float32)
        if kind == "diagonal":
            pat = np.sign(np.sin(2 * np.pi * (cv.x + cv.y) / per))
        elif kind == "checker":
            pat = np.sign(np.sin(2 * np.pi * cv.x / per) * np.sin(2 * np.pi * cv.y / per))
        elif kind == "ribs":
            pat = np.sign(np.sin(2 * np.pi * cv.y / per))
        else:  # gloss: a specular highlight band down the right of the body
            pat = 2.0 * np.exp(-(((cv.x - cx - 0.35 * sh_w) / (0.25 * sh_w + 1e-3)) ** 2)) - 0.5
        return np.clip(rgb[None, None, :] + amp * pat[..., None], 0, 1).astype(np.float32)

    skin = col(person.skin, person.skin_temp)
    top_c = material(person.top, person.top_temp, person.top_material)
    bottom_c = material(person.bottom, person.bottom_temp, person.bottom_material)

    # Backpack behind the body when seen from the front.
    if person.backpack is not None and view == "front":
        _paint(img, cv.rect(cx - sh_w * 0.8, sh_y, cx + sh_w * 0.8, hip_y - 0.05 * ph), col(person.backpack, 0.3))
    # Legs (trousers, or shorts over skin).
    for side in (-1, 1):
        hx = cx + side * hip_w * 0.5
        fx = hx + side * phase * 0.12 * ph * (0.4 if view != "side" else 1.0)
        leg = cv.capsule(hx, hip_y, fx, foot_y - limb, limb * 1.25)
        if person.shorts:
            knee_y = hip_y + (foot_y - hip_y) * 0.45
            _paint(img, leg, skin)
            _paint(img, leg * (cv.y < knee_y), bottom_c)
        else:
            _paint(img, leg, bottom_c)
        _paint(
            img,
            cv.ellipse(fx + side * limb * 0.3, foot_y - limb * 0.6, limb * 1.5, limb * 0.8),
            col(person.shoes, 0.35),
        )
    # Torso with texture.
    torso = cv.trapezoid(cx, sh_y, hip_y + 0.04 * ph, sh_w, hip_w)
    if person.texture in ("hstripes", "vstripes"):
        coord = (cv.y - sh_y) if person.texture == "hstripes" else (cv.x - cx)
        stripe = (np.sin(2 * np.pi * coord / (person.stripe_period * ph)) > 0).astype(np.float32)
        tex_c = material(person.tex_colour, person.tex_temp, person.tex_material)
        pattern = top_c * (1 - stripe[..., None]) + tex_c * stripe[..., None]
        _paint(img, torso, pattern)
    else:
        _paint(img, torso, top_c)
        if person.texture == "logo" and view == "front":
            ly, lr = sh_y + 0.12 * ph, 0.045 * ph
            shape = [
                cv.ellipse(cx, ly, lr, lr),
                cv.rect(cx - lr, ly - lr, cx + lr, ly + lr),
                cv.trapezoid(cx, ly - lr, ly + lr, 0.1, lr),
            ][person.logo_shape]
            _paint(img, shape, material(person.tex_colour, person.tex_temp, person.tex_material))
    # Backpack on the back / side.
    if person.backpack is not None and view != "front":
        if view == "back":
            m = cv.rect(cx - sh_w * 0.75, sh_y + 0.02 * ph, cx + sh_w * 0.75, hip_y - 0.03 * ph)
        else:
            m = cv.rect(cx - sh_w - 0.08 * ph, sh_y + 0.02 * ph, cx - sh_w * 0.7, hip_y - 0.05 * ph)
        _paint(img, m, col(person.backpack, 0.3))
    # Arms.
    for side in (-1, 1):
        sx = cx + side * sh_w * 0.92
        hx = sx + side * 0.02 * ph - side * phase * 0.08 * ph * (1.0 if view == "side" else 0.3)
        hy = hip_y + 0.02 * ph
        _paint(img, cv.capsule(sx, sh_y + limb, hx, hy, limb), top_c)
        _paint(img, cv.ellipse(hx, hy + limb, limb * 0.9, limb * 1.1), skin)
    # Bag hanging at the hip.
    if person.bag is not None:
        bx = cx + person.bag_side * (hip_w + 0.04 * ph)
        _paint(
            img,
            cv.capsule(cx - person.bag_side * sh_w * 0.6, sh_y, bx, hip_y - 0.02 * ph, 0.6),
            col(person.bag * 0.6, 0.28),
        )
        _paint(
            img, cv.rect(bx - 0.05 * ph, hip_y - 0.03 * ph, bx + 0.05 * ph, hip_y + 0.07 * ph), col(person.bag, 0.28)
        )
    # Head, hair, hat.
    _paint(img, cv.ellipse(cx, head_cy, head_r * 0.85, head_r), skin)
    hair_c = col(person.hair, 0.6)
    if view == "back":
        _paint(img, cv.ellipse(cx, head_cy, head_r * 0.88, head_r * 1.02), hair_c)
    else:
        _paint(img, cv.ellipse(cx, head_cy - head_r * 0.45, head_r * 0.9, head_r * 0.6), hair_c)
    if person.long_hair:
        _paint(
            img,
            cv.rect(cx - head_r * 0.9, head_cy, cx + head_r * 0.9, head_cy + head_r * 2.2)
            * (1.0 if view != "front" else 0.0),
            hair_c,
        )
        if view == "front":
            for side in (-1, 1):
                _paint(
                    img,
                    cv.rect(
                        cx + side * head_r * 0.6 - 1.2,
                        head_cy - head_r * 0.2,
                        cx + side * head_r * 0.6 + 1.2,
                        head_cy + head_r * 1.8,
                    ),
                    hair_c,
                )
    if hs is not None:
        _head_shoulder(img, cv, hs, person, view, cx, head_cy, head_r, sh_y, sh_w, ph, col, skin, hair_c)
    if person.hat is not None:
        _paint(img, cv.ellipse(cx, head_cy - head_r * 0.7, head_r * 1.05, head_r * 0.45), col(person.hat, 0.45))
    # Occluder in front (a box, a railing, another object), in both modalities.
    if rng.random() < 0.2:
        oy = rng.uniform(0.55, 0.85) * h
        ox = rng.uniform(-0.3, 0.6) * w
        _paint(img, cv.rect(ox, oy, ox + rng.uniform(0.3, 0.8) * w, h + 5), shade())
    if rng4 is not None and rng4.random() < hs.occlusion_p:
        _lower_occluder(img, cv, rng4, hip_y, foot_y, cx, ph, w, shade, infrared)
    return img


def _head_shoulder(
    img, cv, hs: HeadShoulder, person: Person, view: str, cx, head_cy, head_r, sh_y, sh_w, ph, col, skin, hair_c
) -> None:
    """Version 4 head-shoulder cues, drawn over the v3 person (see ``HeadShoulder``)."""
    neck_top = head_cy + head_r * 0.8
    _paint(img, cv.rect(cx - head_r * 0.35, neck_top, cx + head_r * 0.35, sh_y + 1), skin)
    # sloped shoulders: a fabric wedge from the neck to each shoulder tip
    for side in (-1, 1):
        _paint(
            img,
            cv.capsule(cx, sh_y - 0.01 * ph, cx + side * sh_w * 0.95, sh_y + hs.slope * ph, max(1.0, 0.03 * ph)),
            col(person.top, person.top_temp),
        )
    fabric = col(hs.collar_colour, hs.collar_temp)
    if hs.collar == "vneck" and view != "back":
        _paint(img, cv.trapezoid(cx, sh_y, sh_y + 0.08 * ph, sh_w * 0.35, 0.3), skin)
    elif hs.collar == "open" and view != "back":
        _paint(img, cv.trapezoid(cx, sh_y - 1, sh_y + 0.05 * ph, sh_w * 0.45, sh_w * 0.2), skin)
    elif hs.collar == "hood":
        _paint(img, cv.ellipse(cx, sh_y + 0.005 * ph, sh_w * 0.75, 0.035 * ph), fabric)
        if view == "back":
            _paint(img, cv.ellipse(cx, sh_y + 0.05 * ph, sh_w * 0.5, 0.05 * ph), fabric)
    elif hs.collar == "scarf":
        _paint(img, cv.rect(cx - head_r * 0.9, neck_top, cx + head_r * 0.9, sh_y + 0.03 * ph), fabric)
    else:  # crew: a narrow band of the top's fabric around the neck
        _paint(img, cv.ellipse(cx, sh_y, head_r * 0.6, 0.012 * ph + 0.5), col(person.top, person.top_temp))
    # hair style (warm in thermal, so its outline is a cross-modal cue)
    if hs.hair_style == "bald":
        _paint(img, cv.ellipse(cx, head_cy, head_r * 0.85, head_r), skin)
    elif hs.hair_style == "bun":
        _paint(img, cv.ellipse(cx, head_cy - head_r * 1.05, head_r * 0.45, head_r * 0.35), hair_c)
    elif hs.hair_style == "curly":
        for dx in (-0.6, 0.0, 0.6):
            _paint(img, cv.ellipse(cx + dx * head_r, head_cy - head_r * 0.75, head_r * 0.42, head_r * 0.38), hair_c)
    elif hs.hair_style == "long" and view != "back":
        for side in (-1, 1):
            _paint(
                img,
                cv.rect(cx + side * head_r * 0.95 - 1.5, head_cy, cx + side * head_r * 0.95 + 1.5, sh_y + 0.06 * ph),
                hair_c,
            )
    if hs.glasses and view != "back":
        _paint(
            img,
            cv.rect(cx - head_r * 0.7, head_cy - head_r * 0.15, cx + head_r * 0.7, head_cy + head_r * 0.1),
            col(np.array([0.1, 0.1, 0.12]), 0.15),
        )


def _lower_occluder(img, cv, rng, hip_y, foot_y, cx, ph, w, shade, infrared: bool) -> None:
    """Version 4: the lower body hidden by a railing, a carried object or a low wall (both modalities)."""
    kind = rng.choice(["railing", "carried", "wall"], p=[0.4, 0.35, 0.25])
    value = shade()
    if kind == "railing":
        y0 = hip_y + rng.uniform(-0.05, 0.15) * ph
        for k in range(int(rng.integers(2, 4))):
            y = y0 + k * rng.uniform(0.08, 0.14) * ph
            _paint(img, cv.rect(-5, y, w + 5, y + max(1.5, 0.025 * ph)), value)
        for x in np.arange(rng.uniform(0, 10), w, rng.uniform(8, 16)):
            _paint(img, cv.rect(x, y0, x + max(1.0, 0.02 * ph), foot_y + 5), value)
    elif kind == "carried":  # a box or a large bag held in front of the legs
        bw, bh = rng.uniform(0.12, 0.22) * ph, rng.uniform(0.15, 0.3) * ph
        bx = cx + rng.normal(0, 0.05 * ph)
        by = hip_y + rng.uniform(0.0, 0.1) * ph
        _paint(img, cv.rect(bx - bw, by, bx + bw, by + bh), value)
    else:
        _paint(img, cv.rect(-5, hip_y + rng.uniform(0.15, 0.3) * ph, w + 5, foot_y + 20), value)


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return img
    k = 2 * r + 1
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    c = np.cumsum(np.cumsum(pad, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


# Version 4: each visible camera has its own light level and colour (indoor cams dimmer and warmer),
# and the light varies within a camera: overall level, a direction (gradient across the frame) and a
# soft shadow band; infrared is unaffected (it sees emitted heat, not reflected light).
CAMERA_LIGHT = {1: 0.7, 2: 0.85, 4: 1.15, 5: 1.0}


def _illumination(img: np.ndarray, rng: np.random.Generator, h: int, w: int, cam: int) -> np.ndarray:
    level = CAMERA_LIGHT.get(cam, 1.0) * np.exp(rng.normal(0, 0.25))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)) * rng.uniform(0.3, 0.9)
    light = level * (1.0 + ramp)
    if rng.random() < 0.4:  # a shadow band (a pillar, a tree) crossing the person
        x0 = rng.uniform(0, w)
        light = light * (1.0 - rng.uniform(0.3, 0.6) * np.clip(1.0 - np.abs(xx - x0) / rng.uniform(4, 12), 0, 1))
    return img * light[..., None]


def render(
    person: Person,
    rng: np.random.Generator,
    h: int,
    w: int,
    infrared: bool,
    cam: int,
    hs: HeadShoulder | None = None,
    rng4: np.random.Generator | None = None,
) -> np.ndarray:
    """One (h, w, 3) uint8 image of ``person`` seen by camera ``cam`` (``hs`` / ``rng4``: version 4 cues)."""
    img = _scene(person, rng, h, w, infrared, cam, hs, rng4)
    if rng4 is not None and not infrared:
        img = _illumination(img, rng4, h, w, cam)
    if infrared:
        img = _box_blur(img, int(rng.integers(0, 2)))
        img = img + rng.normal(0, rng.uniform(0.01, 0.04), img.shape).astype(np.float32)
        lo, hi = np.percentile(img, [1, 99.5])  # automatic gain control
        img = (img - lo) / max(hi - lo, 1e-3) * rng.uniform(0.75, 1.0)
        img = np.repeat(img, 3, axis=2)
    else:
        balance = {1: (1.05, 1.0, 0.9), 2: (0.95, 1.0, 1.08), 4: (1.08, 1.04, 0.92), 5: (0.92, 1.0, 1.05)}
        gain = rng.uniform(0.55, 1.25) * np.array(balance.get(cam, (1.0, 1.0, 1.0)), np.float32)
        grad = 1.0 + rng.uniform(-0.25, 0.25) * (np.linspace(-1, 1, w, dtype=np.float32))[None, :, None]
        img = img * gain * grad + rng.normal(0, 0.015, img.shape).astype(np.float32)
        img = _box_blur(img, int(rng.random() < 0.3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def _person_rng(seed: int, pid: int) -> np.random.Generator:
    return np.random.default_rng([seed, pid, 7919])


def _image_rng(seed: int, pid: int, cam: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, pid, cam, k, 104729])


def _split_counts(n: int) -> tuple[int, int, int]:
    test = max(2, round(n * 96 / 491))
    val = max(2, round(n * 99 / 491))
    train = n - test - val
    if train < 2:
        raise ValueError(f"--ids {n}: too few identities for a SYSU layout (need at least 6)")
    return train, val, test


def _sysu_plan(ids: int, seed: int, images: int) -> tuple[dict[str, list[int]], list[tuple[int, int, int]]]:
    rng = np.random.default_rng([seed, 1])
    pids = sorted(int(p) for p in rng.choice(np.arange(1, max(ids * 2, 10) + 1), ids, replace=False))
    n_train, n_val, _ = _split_counts(ids)
    order = rng.permutation(pids)
    splits = {
        "train": sorted(int(p) for p in order[:n_train]),
        "val": sorted(int(p) for p in order[n_train : n_train + n_val]),
        "test": sorted(int(p) for p in order[n_train + n_val :]),
    }
    jobs = []
    for pid in pids:
        vis = [c for c in SYSU_VISIBLE if rng.random() < 0.75] or [int(rng.choice(SYSU_VISIBLE))]
        ir = [c for c in SYSU_INFRARED if rng.random() < 0.8] or [int(rng.choice(SYSU_INFRARED))]
        for cam in sorted(vis + ir):
            n = int(max(1, images + rng.integers(-1, 2)))
            jobs += [(pid, cam, k) for k in range(1, n + 1)]
    return splits, jobs


def _v4(seed: int, pid: int, cam: int, k: int, version: int):
    """The version-4 cues of one image, from their own streams (so version 3's images stay identical)."""
    if version < 4:
        return None, None
    hs = make_head_shoulder(np.random.default_rng([seed, pid, 7919, 4]))
    return hs, np.random.default_rng([seed, pid, cam, k, 104729, 4])


def _render_sysu(args: tuple) -> None:
    out, seed, h, w, batch, version = args
    for pid, cam, k in batch:
        person = make_person(_person_rng(seed, pid))
        img = render(
            person, _image_rng(seed, pid, cam, k), h, w, cam in SYSU_INFRARED, cam, *_v4(seed, pid, cam, k, version)
        )
        path = Path(out) / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, "JPEG", quality=92)


def _render_regdb(args: tuple) -> None:
    out, seed, h, w, batch, version = args
    for pid, modality, k in batch:
        person = make_person(_person_rng(seed, pid))
        infrared = modality == "Thermal"
        cam = 3 if infrared else 1
        img = render(person, _image_rng(seed, pid, cam, k), h, w, infrared, cam, *_v4(seed, pid, cam, k, version))
        kind = "thermal" if infrared else "visible"
        path = Path(out) / modality / str(pid) / f"{kind}_{pid:04d}_{k:02d}.bmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, "BMP")


def _llcm_plan(ids: int, seed: int, images: int) -> tuple[dict[str, list[int]], list[tuple[int, str, int, int]]]:
    """LLCM's split (a third of the identities for test, as 351 of 1,064) and the images: each identity in a
    random subset of the nine visible and eight near-infrared cameras."""
    rng = np.random.default_rng([seed, 3])
    pids = list(range(1, ids + 1))
    order = rng.permutation(pids)
    n_test = max(2, round(ids * 351 / 1064))
    splits = {"train": sorted(int(p) for p in order[n_test:]), "test": sorted(int(p) for p in order[:n_test])}
    jobs = []
    for pid in pids:
        part = "test" if pid in splits["test"] else "train"
        vis = [c for c in LLCM_VISIBLE if rng.random() < 0.4] or [int(rng.choice(LLCM_VISIBLE))]
        nir = [c for c in LLCM_INFRARED if rng.random() < 0.4] or [int(rng.choice(LLCM_INFRARED))]
        for modality, cams in (("vis", vis), ("nir", nir)):
            for cam in cams:
                n = int(max(1, images + rng.integers(-1, 2)))
                jobs += [(pid, f"{part}_{modality}", cam, k) for k in range(1, n + 1)]
    return splits, jobs


def _render_llcm(args: tuple) -> None:
    """LLCM's images: the near-infrared ones as any infrared camera's; the visible ones in low light (LLCM's
    point: dark scenes, where the visible image has little left, gain noise and a colour cast)."""
    out, seed, h, w, batch, version = args
    for pid, folder, cam, k in batch:
        infrared = folder.endswith("nir")
        person = make_person(_person_rng(seed, pid))
        rng = _image_rng(seed, pid, cam + (100 if infrared else 0), k)
        img = render(person, rng, h, w, infrared, cam, *_v4(seed, pid, cam + (100 if infrared else 0), k, version))
        if not infrared:
            dark = img.astype(np.float32) / 255 * rng.uniform(0.15, 0.4)
            dark = dark * np.array([0.9, 1.0, 1.15], np.float32) + rng.normal(0, 0.02, dark.shape).astype(np.float32)
            img = (np.clip(dark, 0, 1) * 255 + 0.5).astype(np.uint8)
        path = Path(out) / folder / f"cam{cam}" / f"{pid:04d}" / f"{pid:04d}_c{cam:02d}_{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, "JPEG", quality=92)


def _write_llcm_index(tmp: Path, splits: dict[str, list[int]], jobs: list) -> None:
    (tmp / "idx").mkdir()
    (tmp / "idx" / "test_id.txt").write_text(",".join(str(p) for p in splits["test"]) + "\n")
    label = {pid: i for i, pid in enumerate(splits["train"])}
    for modality in ("vis", "nir"):
        lines = [
            f"train_{modality}/cam{cam}/{pid:04d}/{pid:04d}_c{cam:02d}_{k:04d}.jpg {label[pid]}"
            for pid, folder, cam, k in jobs
            if folder == f"train_{modality}"
        ]
        (tmp / "idx" / f"train_{modality}.txt").write_text("\n".join(lines) + "\n")


def _run_jobs(fn, out: Path, seed: int, h: int, w: int, jobs: list, workers: int, version: int) -> None:
    chunks = [jobs[i :: max(1, workers * 4)] for i in range(max(1, workers * 4))]
    tasks = [(str(out), seed, h, w, c, version) for c in chunks if c]
    if workers <= 1:
        for t in tasks:
            fn(t)
    else:
        # "spawn": a forked child of a process that has started threads (Ray's gRPC, a DataLoader, torch's
        # pools) can crash or deadlock; a fresh interpreter per worker is safe wherever this is called.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(fn, tasks))


def generate(
    layout: str,
    out: str | Path,
    ids: int | None = None,
    seed: int = 0,
    images: int | None = None,
    height: int | None = None,
    width: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    version: int = GENERATOR_VERSION,
) -> Path:
    """Write a synthetic benchmark in the ``layout`` ("sysu", "regdb" or "llcm") layout to ``out``; ``version`` 3
    is the benchmark without the version-4 cues (head-shoulder, lower-body occlusion, illumination)."""
    if layout not in DEFAULTS:
        raise ValueError(f"layout {layout!r}: choose sysu, regdb or llcm")
    if version not in VERSIONS:
        raise ValueError(f"version {version!r}: choose one of {', '.join(map(str, VERSIONS))}")
    d = DEFAULTS[layout]
    ids = d["ids"] if ids is None else ids
    images = d["images"] if images is None else images
    h = d["height"] if height is None else height
    w = d["width"] if width is None else width
    least = {"sysu": 6, "regdb": 2, "llcm": 6}[layout]
    if not isinstance(ids, int) or ids < least:
        raise ValueError(f"ids {ids!r}: need at least {least} identities")
    if layout == "regdb" and ids % 2:
        raise ValueError(f"ids {ids}: RegDB splits the identities in halves; give an even number")
    if images < 1:
        raise ValueError(f"images {images!r}: need at least 1 image per camera")
    if not (16 <= h <= 1024 and 8 <= w <= 1024):
        raise ValueError(f"image size {h}x{w}: height must be in 16..1024 and width in 8..1024")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output folder {out} exists and is not empty (pass overwrite=True / --overwrite)")
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with atomic_directory(out) as tmp:
        if layout == "llcm":
            splits, jobs = _llcm_plan(ids, seed, images)
            _run_jobs(_render_llcm, tmp, seed, h, w, jobs, workers, version)
            _write_llcm_index(tmp, splits, jobs)
        elif layout == "sysu":
            splits, jobs = _sysu_plan(ids, seed, images)
            _run_jobs(_render_sysu, tmp, seed, h, w, jobs, workers, version)
            (tmp / "exp").mkdir()
            for name, members in splits.items():
                (tmp / "exp" / f"{name}_id.txt").write_text(",".join(str(p) for p in members) + "\n")
        else:
            pids = list(range(1, ids + 1))
            jobs = [(pid, mod, k) for pid in pids for mod in ("Visible", "Thermal") for k in range(1, images + 1)]
            _run_jobs(_render_regdb, tmp, seed, h, w, jobs, workers, version)
            (tmp / "idx").mkdir()
            for trial in range(1, 11):
                perm = np.random.default_rng([seed, trial, 31]).permutation(pids)
                half = {"train": sorted(perm[: ids // 2].tolist()), "test": sorted(perm[ids // 2 :].tolist())}
                for part, members in half.items():
                    for folder, kind in (("Visible", "visible"), ("Thermal", "thermal")):
                        lines = [
                            f"{folder}/{pid}/{kind}_{pid:04d}_{k:02d}.bmp {pid - 1}"
                            for pid in members
                            for k in range(1, images + 1)
                        ]
                        (tmp / "idx" / f"{part}_{kind}_{trial}.txt").write_text("\n".join(lines) + "\n")
        manifest = {
            "generator": "aminet.data.synthetic",
            "version": version,
            "layout": layout,
            "ids": ids,
            "seed": seed,
            "images": images,
            "height": h,
            "width": w,
        }
        (tmp / "SYNTHETIC.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


# ------------------------------------------------------------------------------------------------
# The embedded default
# ------------------------------------------------------------------------------------------------


def cache_home() -> Path:
    """``$AMINET_CACHE``, else ``$XDG_CACHE_HOME/aminet``, else ``~/.cache/aminet``."""
    if os.environ.get("AMINET_CACHE"):
        return Path(os.environ["AMINET_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "aminet").resolve()


def default_root(layout: str, ids: int | None = None, seed: int = 0, version: int = GENERATOR_VERSION) -> Path:
    d = DEFAULTS[layout]
    key = f"{layout}-ids{ids or d['ids']}-seed{seed}-v{version}"
    return cache_home() / "synthetic" / key


def ensure_default(
    layout: str, ids: int | None = None, seed: int = 0, quiet: bool = False, version: int = GENERATOR_VERSION
) -> Path:
    """The synthetic benchmark used when no data root is given: generated once, then reused."""
    root = default_root(layout, ids, seed, version)
    if is_synthetic(root):
        if not quiet:
            print(
                f"[aminet] no --data-root given: using the SYNTHETIC {layout} benchmark at {root}. "
                f"Pass --data-root /path/to/{_title(layout)} for real data.",
                file=sys.stderr,
            )
        return root
    print(
        f"[aminet] no --data-root given: GENERATING the SYNTHETIC {layout} benchmark into {root} "
        f"(once). Pass --data-root /path/to/{_title(layout)} for real data.",
        file=sys.stderr,
    )
    try:
        generate(layout, root, ids=ids, seed=seed, overwrite=True, version=version)
    except OSError:
        if is_synthetic(root):  # another process finished it first
            return root
        raise
    return root


def _title(layout: str) -> str:
    from aminet.data.registry import get

    return get(layout).title


def is_synthetic(root: str | Path) -> bool:
    """Whether ``root`` holds a benchmark this module generated (its manifest is there)."""
    return (Path(root) / "SYNTHETIC.json").is_file()


def fingerprint(root: str | Path) -> str | None:
    """A stable id of a synthetic layout (from its manifest), or None for other data."""
    path = Path(root) / "SYNTHETIC.json"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m aminet.data.synthetic",
        description="Write the synthetic VI-ReID benchmark in the SYSU-MM01 or RegDB layout.",
    )
    parser.add_argument("--layout", required=True, choices=sorted(DEFAULTS), help="sysu, regdb or llcm")
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent)")
    parser.add_argument("--ids", type=int, default=None, help="number of identities (default: sysu 100, regdb 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per camera (sysu, +-1) or per modality (regdb); default sysu 6, regdb 10",
    )
    parser.add_argument("--height", type=int, default=None, help="rendered height (default 128)")
    parser.add_argument("--width", type=int, default=None, help="rendered width (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument(
        "--version",
        type=int,
        default=GENERATOR_VERSION,
        choices=VERSIONS,
        help=f"benchmark version (default {GENERATOR_VERSION}; 3 = without head-shoulder cues, "
        "lower-body occlusion and illumination changes)",
    )
    args = parser.parse_args(argv)
    try:
        out = generate(
            args.layout,
            args.out,
            ids=args.ids,
            seed=args.seed,
            images=args.images,
            height=args.height,
            width=args.width,
            workers=args.workers,
            overwrite=args.overwrite,
            version=args.version,
        )
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(1 for p in out.rglob("*") if p.suffix in (".jpg", ".bmp"))
    print(f"wrote {n} images in the {args.layout} layout to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
