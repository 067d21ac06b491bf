"""Procedural synthetic faces and a RAF-DB-shaped sample tree (the real RAF-DB is licensed).

Every face is drawn with OpenCV primitives (anti-aliased, sub-pixel coordinates) in a canonical
100x100 "aligned" frame whose eyes sit at :data:`CANONICAL_EYES`; a similarity transform places
the face in a larger "original" photo with background, hair, neck and clothing. The aligned image
is warped back out of the original with the similarity that maps the annotated eye landmarks to
the canonical eye positions, exactly as an alignment tool would, so originals, landmarks and
aligned images agree.

The seven expressions (RAF-DB order: surprise, fear, disgust, happiness, sadness, anger, neutral)
differ in brow slope and height, eye opening, mouth curve/opening/width, teeth and wrinkles; each
image draws an expression intensity, so weak expressions are confusable with neutral and with
their neighbours (surprise/fear, disgust/anger, sadness/neutral). Identities vary in face shape,
skin tone, hair, eye/nose/mouth geometry, background, lighting, blur and noise.

Everything is derived from per-image generators (``cli_common.seed64(seed, "sample", split,
index)``): the same seed gives the same bytes, whatever the order of generation.

Example (the CLI lives in rafdb_dataset.py)::

    python3 rafdb_dataset.py sample --out RAF-DB --train 1200 --test 300 --seed 0
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cli_common import seed64
from datasets.classes import RAFDB_CLASSES as CLASS_NAMES
from datasets.images import encode_image

NUM_CLASSES = len(CLASS_NAMES)

ALIGNED_SIZE = 100
# Eye centres (x, y) of every aligned image, image-left eye first (RAF-DB's "left eye").
CANONICAL_EYES = np.array([[30.0, 40.0], [70.0, 40.0]])

# Classes of a block of 20 consecutive images: mildly imbalanced, like (but far milder than)
# RAF-DB, where happiness and neutral dominate and fear/disgust are rare. The first 7 entries of
# each block are one of each class, so any split of >= 7 images holds all 7 classes.
_BLOCK_COUNTS = (3, 2, 2, 4, 3, 3, 3)
_BLOCK = 20

# Classes annotators confuse with each one (first = most often), for the soft labels.
_NEIGHBOURS = {
    0: (1, 3),  # surprise: fear, happiness
    1: (0, 4),  # fear: surprise, sadness
    2: (5, 4),  # disgust: anger, sadness
    3: (6, 0),  # happiness: neutral, surprise
    4: (6, 1),  # sadness: neutral, fear
    5: (2, 6),  # anger: disgust, neutral
    6: (4, 3),  # neutral: sadness, happiness
}


@dataclass(frozen=True)
class Expression:
    """Full-intensity offsets from the neutral face, in canonical (100 px) pixels; + is up."""

    eye_open: float = 1.0  # multiplier of the eye's half-height
    brow_inner: float = 0.0  # raise of the brow's inner end
    brow_outer: float = 0.0  # raise of the brow's outer end
    brow_in: float = 0.0  # inner ends pulled towards the midline
    brow_arch: float = 0.0  # extra raise of the brow's middle
    mouth_curve: float = 0.0  # raise of the mouth corners relative to the centre
    mouth_open: float = 0.0  # gap between the lips at the centre
    mouth_width: float = 0.0  # change of the mouth's half-width
    mouth_round: bool = False  # elliptical opening ("O")
    lip_raise: float = 0.0  # one-sided raise of the upper lip (disgust)
    lip_thin: float = 0.0  # fraction of lip thickness pressed away
    teeth: bool = False
    cheek_raise: float = 0.0  # lower eyelid pushed up (Duchenne smile), fraction of eye height
    forehead_lines: bool = False
    frown_lines: bool = False
    smile_lines: bool = False
    nose_wrinkle: bool = False


# One entry per class, in RAF-DB order (index = label - 1).
EXPRESSIONS = (
    Expression(eye_open=1.75, brow_inner=6.5, brow_outer=6.0, brow_arch=2.5, mouth_open=14.0,
               mouth_width=-5.0, mouth_round=True, forehead_lines=True),  # surprise
    Expression(eye_open=1.5, brow_inner=6.5, brow_outer=0.5, brow_in=2.0, mouth_curve=-3.0,
               mouth_open=6.5, mouth_width=5.0, teeth=True, forehead_lines=True),  # fear
    Expression(eye_open=0.6, brow_inner=-3.0, brow_outer=-2.5, brow_in=0.5, mouth_curve=-2.0,
               mouth_open=2.5, mouth_width=-1.0, lip_raise=6.5, teeth=True,
               nose_wrinkle=True),  # disgust
    Expression(eye_open=0.8, brow_inner=0.8, brow_outer=0.8, mouth_curve=10.0, mouth_open=6.0,
               mouth_width=6.0, teeth=True, cheek_raise=0.35, smile_lines=True),  # happiness
    Expression(eye_open=0.8, brow_inner=6.5, brow_outer=-4.0, brow_in=1.0, mouth_curve=-8.5,
               mouth_width=-1.5),  # sadness
    Expression(eye_open=0.62, brow_inner=-8.0, brow_outer=2.0, brow_in=3.0, mouth_curve=-1.5,
               mouth_width=-3.5, lip_thin=0.6, frown_lines=True),  # anger
    Expression(),  # neutral
)

_SKIN_TONES = np.array([  # RGB, light to dark
    [242, 214, 190], [228, 190, 160], [205, 160, 125], [170, 120, 85], [125, 85, 60], [90, 60, 45],
], dtype=np.float64)
_HAIR_COLOURS = np.array([
    [25, 20, 18], [55, 38, 25], [95, 65, 40], [150, 110, 60], [200, 170, 110], [150, 145, 140],
    [120, 50, 25],
], dtype=np.float64)
_IRIS_COLOURS = np.array([[60, 35, 20], [85, 55, 30], [50, 70, 95], [60, 80, 55], [30, 25, 22]],
                         dtype=np.float64)

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------------------------
# Drawing helpers: geometry in canonical coordinates, mapped by a 2x3 similarity T.


class _Canvas:
    """An RGB uint8 image plus the similarity T (canonical -> image pixel coordinates)."""

    def __init__(self, image: np.ndarray, transform: np.ndarray):
        self.image = image
        self.T = transform
        self.scale = float(np.hypot(transform[0, 0], transform[1, 0]))
        self.angle = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))

    def map(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return xy @ self.T[:, :2].T + self.T[:, 2]

    def _fixed(self, xy) -> np.ndarray:
        return np.round(self.map(xy) * _ONE).astype(np.int32)

    def width(self, thickness: float) -> int:
        return max(1, int(round(thickness * self.scale)))

    def ellipse(self, centre, axes, colour, angle=0.0, thickness=-1, start=0.0, end=360.0):
        c = self._fixed(centre)[0]
        ax = (max(1, int(round(axes[0] * self.scale * _ONE))),
              max(1, int(round(axes[1] * self.scale * _ONE))))
        thick = -1 if thickness < 0 else self.width(thickness)
        cv2.ellipse(self.image, (int(c[0]), int(c[1])), ax, angle + self.angle, start, end,
                    _colour(colour), thick, cv2.LINE_AA, _SHIFT)

    def fill(self, xy, colour):
        cv2.fillPoly(self.image, [self._fixed(xy)], _colour(colour), cv2.LINE_AA, _SHIFT)

    def line(self, xy, colour, thickness=1.0, closed=False):
        cv2.polylines(self.image, [self._fixed(xy)], closed, _colour(colour), self.width(thickness),
                      cv2.LINE_AA, _SHIFT)


def _colour(rgb) -> tuple:
    return tuple(min(255.0, max(0.0, float(v))) for v in rgb)


def _quad_curve(p0, p1, p2, n=9) -> np.ndarray:
    """Points of the quadratic Bezier curve with control points p0, p1, p2."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _ellipse_points(centre, axes, start_deg, end_deg, n=24) -> np.ndarray:
    a = np.radians(np.linspace(start_deg, end_deg, n))
    return np.stack([centre[0] + axes[0] * np.cos(a), centre[1] + axes[1] * np.sin(a)], axis=1)


# --------------------------------------------------------------------------------------------
# Identity and expression parameters


@dataclass
class _Identity:
    face_centre: tuple
    face_axes: tuple
    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    sclera: np.ndarray
    clothing: np.ndarray
    hair_style: int  # 0 very short, 1 short, 2 long
    hairline: float  # y of the hair edge on the forehead (canonical)
    fringe: float  # how far the middle of the hair edge drops (+) or recedes (-)
    eye_half: tuple  # (half-width, half-height) at neutral
    iris_radius: float
    brow_gap: float
    brow_thick: float
    nose_y: float
    nose_half: float
    mouth_y: float
    mouth_half: float
    lip_thick: float
    race: int
    gender: int
    age: int


def _draw_identity(rng: np.random.Generator) -> _Identity:
    race = int(rng.choice(3, p=[0.6, 0.15, 0.25]))  # RAF-DB: 0 Caucasian, 1 African-Am., 2 Asian
    tone = {0: rng.uniform(0.0, 2.3), 1: rng.uniform(3.0, 5.0), 2: rng.uniform(0.6, 2.6)}[race]
    lo = int(min(4, np.floor(tone)))
    skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo])
    skin = np.clip(skin * rng.uniform(0.92, 1.06) + rng.normal(0, 5, 3), 30, 250)
    lips = np.clip(skin * np.array([0.82, 0.55, 0.55]) + rng.normal(0, 6, 3), 20, 240)
    gender = int(rng.choice(3, p=[0.47, 0.48, 0.05]))  # 0 male, 1 female, 2 unsure
    age = int(rng.choice(5, p=[0.06, 0.17, 0.5, 0.22, 0.05]))
    if age == 4 and rng.random() < 0.7:
        hair = _HAIR_COLOURS[5] + rng.normal(0, 10, 3)
    elif race in (1, 2):
        hair = _HAIR_COLOURS[rng.integers(0, 2)] + rng.normal(0, 5, 3)
    else:
        hair = _HAIR_COLOURS[rng.integers(0, 7)] + rng.normal(0, 8, 3)
    hair = np.clip(hair, 5, 240)
    brow = np.clip(np.minimum(hair, skin) * rng.uniform(0.45, 0.75), 5, 200)
    hair_style = int(rng.choice(3, p=[0.2, 0.45, 0.35] if gender != 1 else [0.05, 0.25, 0.7]))
    return _Identity(
        face_centre=(50.0 + rng.uniform(-1.5, 1.5), rng.uniform(48.0, 53.0)),
        face_axes=(rng.uniform(38.0, 45.0), rng.uniform(45.0, 52.0)),
        skin=skin,
        lips=lips,
        hair=hair,
        brow=brow,
        iris=np.clip(_IRIS_COLOURS[rng.integers(0, len(_IRIS_COLOURS))] + rng.normal(0, 6, 3),
                     5, 140),
        sclera=np.clip(np.array([238.0, 236.0, 228.0]) + rng.normal(0, 6, 3), 190, 255),
        clothing=rng.uniform(20, 230, 3),
        hair_style=hair_style,
        hairline=rng.uniform(10.0, 20.0),
        fringe=rng.uniform(-4.0, 8.0),
        eye_half=(rng.uniform(6.8, 8.6), rng.uniform(3.0, 3.9)),
        iris_radius=rng.uniform(3.0, 3.7),
        brow_gap=rng.uniform(8.5, 10.5),
        brow_thick=rng.uniform(2.6, 3.8),
        nose_y=rng.uniform(57.0, 62.0),
        nose_half=rng.uniform(4.5, 6.5),
        mouth_y=rng.uniform(72.0, 77.0),
        mouth_half=rng.uniform(12.0, 15.5),
        lip_thick=rng.uniform(1.8, 3.2),
        race=race,
        gender=gender,
        age=age,
    )


def _draw_pose(rng: np.random.Generator, expression: int) -> tuple[Expression, float]:
    """The expression parameters of one image: class template x intensity, plus jitter."""
    if not 0 <= expression < NUM_CLASSES:
        raise ValueError(f"expression must be 0..{NUM_CLASSES - 1}, got {expression}")
    base = EXPRESSIONS[expression]
    # Intensity in [0.65, 1.05], mostly strong (mean 0.92); drawn for every class so that the
    # random stream has the same length whatever the expression.
    k = 1.05 - 0.4 * float(rng.uniform(0.0, 1.0)) ** 2
    if expression == 6:
        k = 1.0
    j = rng.normal(0.0, 1.0, 9)
    pose = Expression(
        eye_open=1.0 + k * (base.eye_open - 1.0) + 0.07 * j[0],
        brow_inner=k * base.brow_inner + 0.8 * j[1],
        brow_outer=k * base.brow_outer + 0.8 * j[2],
        brow_in=k * base.brow_in + 0.3 * j[3],
        brow_arch=k * base.brow_arch + 0.4 * j[4],
        mouth_curve=k * base.mouth_curve + 0.7 * j[5],
        mouth_open=max(0.0, k * base.mouth_open + 0.6 * j[6]),
        mouth_width=k * base.mouth_width + 0.8 * j[7],
        mouth_round=base.mouth_round,
        lip_raise=k * base.lip_raise,
        lip_thin=k * base.lip_thin,
        teeth=base.teeth and k > 0.6,
        cheek_raise=k * base.cheek_raise,
        forehead_lines=base.forehead_lines and k > 0.7,
        frown_lines=base.frown_lines and k > 0.6,
        smile_lines=base.smile_lines and k > 0.55,
        nose_wrinkle=base.nose_wrinkle and k > 0.6,
    )
    return pose, k


# --------------------------------------------------------------------------------------------
# Rendering


def _render_person(canvas: _Canvas, ident: _Identity, pose: Expression, lip_side: int
                   ) -> np.ndarray:
    """Draw hair, neck, clothing, face and features; return the 5 landmarks (canonical)."""
    cx, cy = ident.face_centre
    fa, fb = ident.face_axes
    skin = ident.skin
    shade = skin * 0.8
    # Behind the face: long hair, clothing, neck, ears.
    if ident.hair_style == 2:
        canvas.ellipse((cx, cy + 0.25 * fb), (fa * 1.28, fb * 1.22), ident.hair)
    canvas.ellipse((cx, cy + 2.15 * fb), (fa * 2.3, fb * 0.95), ident.clothing)
    canvas.fill([(cx - 0.48 * fa, cy + 0.4 * fb), (cx + 0.48 * fa, cy + 0.4 * fb),
                 (cx + 0.52 * fa, cy + 1.5 * fb), (cx - 0.52 * fa, cy + 1.5 * fb)], skin * 0.82)
    for side in (-1, 1):
        canvas.ellipse((cx + side * fa * 0.97, 48.0), (4.5, 8.5), skin * 0.9)
    if ident.hair_style >= 1:
        canvas.ellipse((cx, cy - 0.12 * fb), (fa * 1.1, fb * 1.02), ident.hair)
    # Face.
    canvas.ellipse((cx, cy), (fa, fb), skin)
    canvas.ellipse((cx, cy), (fa, fb), skin * 0.88, thickness=1.2)
    eyes = CANONICAL_EYES
    ew, eh0 = ident.eye_half
    eh = max(0.9, eh0 * pose.eye_open)
    # Wrinkles under everything else on the face.
    line_c = skin * 0.72
    if pose.forehead_lines:
        for i, dy in enumerate((15.5, 19.0, 22.5)):
            y = eyes[0, 1] - dy - 0.5 * pose.brow_inner
            half = 11.0 - 2.0 * i
            canvas.line(_quad_curve((cx - half, y + 1.0), (cx, y - 1.2), (cx + half, y + 1.0), 7),
                        line_c, 0.9)
    if pose.frown_lines:
        for side in (-1, 1):
            canvas.line([(cx + side * 2.2, eyes[0, 1] - 9.0), (cx + side * 1.4, eyes[0, 1] - 2.5)],
                        line_c, 0.9)
    # Hair cap over the top of the head, with a fringe / hairline curve.
    arc = _ellipse_points((cx, cy - 0.04 * fb), (fa * 1.06, fb * 1.06), 160.0, 380.0, 28)
    y_edge = cy - fb + ident.hairline + 3.0
    edge = _quad_curve((arc[-1][0], y_edge + 6.0), (cx, y_edge + 2.0 * ident.fringe),
                       (arc[0][0], y_edge + 6.0), 9)
    cap = np.concatenate([arc[arc[:, 1] <= y_edge + 6.0 + 1e-9], edge])
    # Very short hair (style 0) lets the skin show through.
    canvas.fill(cap, ident.hair if ident.hair_style >= 1 else ident.hair * 0.6 + skin * 0.4)

    # Eyes: sclera, iris, pupil, upper lid, optional raised lower lid (smile).
    for (ex, ey) in eyes:
        canvas.ellipse((ex, ey), (ew, eh), ident.sclera)
        ir = ident.iris_radius
        canvas.ellipse((ex, ey), (ir, min(ir, 0.92 * eh)), ident.iris)
        pr = 0.45 * ir
        canvas.ellipse((ex, ey), (pr, min(pr, 0.8 * eh)), (15, 12, 12))
        canvas.ellipse((ex + 0.6 * ir, ey - 0.5 * min(ir, eh)), (0.6, 0.6), (245, 245, 245))
        if pose.cheek_raise > 0.05:
            canvas.ellipse((ex, ey + eh * (2.0 - pose.cheek_raise)), (ew * 1.15, eh), skin)
        lid = _ellipse_points((ex, ey), (ew, eh), 190.0, 350.0, 12)
        canvas.line(lid, ident.brow * 0.7, 1.3)
        canvas.ellipse((ex, ey), (ew, eh), skin * 0.6, thickness=0.6, start=20.0, end=160.0)
    # Brows: tapered, bent polygons.
    for side, (ex, ey) in zip((-1, 1), eyes):
        inward = -side  # towards the midline
        base_y = ey - ident.brow_gap
        inner = (ex + inward * (9.5 + pose.brow_in), base_y - pose.brow_inner)
        outer = (ex - inward * 11.0, base_y - pose.brow_outer + 1.0)
        mid = (ex - inward * 1.0, base_y - 0.5 * (pose.brow_inner + pose.brow_outer)
               - 2.0 - pose.brow_arch)
        centre = _quad_curve(inner, mid, outer, 9)
        half = ident.brow_thick * np.linspace(0.55, 0.3, 9)
        canvas.fill(np.concatenate([centre - np.stack([0 * half, half], 1),
                                    (centre + np.stack([0 * half, half], 1))[::-1]]), ident.brow)
    # Nose.
    nx, ny = cx, ident.nose_y
    nw = ident.nose_half * (1.12 if pose.nose_wrinkle else 1.0)
    canvas.ellipse((nx, ny - 1.2), (nw * 0.75, 3.2), skin * 0.93)
    for side in (-1, 1):
        canvas.line(_quad_curve((nx + side * 2.5, eyes[0, 1] + 4.0),
                                (nx + side * 3.5, ny - 6.0), (nx + side * nw, ny - 1.0), 6),
                    shade, 0.9)
        canvas.ellipse((nx + side * nw * 0.5, ny + 0.6), (1.7, 1.05), skin * 0.42,
                       angle=side * 15.0)
    if pose.nose_wrinkle:
        for i in range(3):
            y = eyes[0, 1] + 3.0 + 2.2 * i
            canvas.line([(nx - 3.5, y + 0.6), (nx, y - 0.3), (nx + 3.5, y + 0.6)], line_c, 0.9)
    # Mouth.
    mx, my = cx, ident.mouth_y
    mw = ident.mouth_half + pose.mouth_width
    t = np.linspace(-1.0, 1.0, 15)
    xs = mx + mw * t
    ym = my - pose.mouth_curve * t ** 2
    profile = np.sqrt(1 - t ** 2) if pose.mouth_round else 1 - t ** 2
    opening = pose.mouth_open * profile
    raise_up = pose.lip_raise * np.clip(lip_side * t, 0.0, None) ** 0.7 * (1 - t ** 2) ** 0.5 * 1.6
    upper_in = ym - 0.45 * opening - raise_up
    lower_in = ym + 0.55 * opening
    lt = ident.lip_thick * (1.0 - pose.lip_thin)
    body = 0.35 + 0.65 * np.sqrt(1 - t ** 2)
    upper_out = upper_in - lt * body
    lower_out = lower_in + 1.3 * lt * body
    if pose.smile_lines:
        for side in (-1, 1):
            canvas.line(_quad_curve((nx + side * (nw + 2.5), ny - 2.0),
                                    (nx + side * (mw + 4.0), my - pose.mouth_curve - 2.0),
                                    (nx + side * (mw + 2.5), my + 3.0), 7), shade, 1.0)
    canvas.fill(np.concatenate([np.stack([xs, upper_out], 1), np.stack([xs, lower_out], 1)[::-1]]),
                ident.lips)
    gap = lower_in - upper_in
    if gap.max() > 1.0:
        canvas.fill(np.concatenate([np.stack([xs, upper_in], 1),
                                    np.stack([xs, lower_in], 1)[::-1]]), (70, 22, 28))
        if pose.teeth:
            teeth_low = np.minimum(upper_in + np.minimum(3.6, 0.55 * gap + 0.8), lower_in)
            canvas.fill(np.concatenate([np.stack([xs, upper_in], 1),
                                        np.stack([xs, teeth_low], 1)[::-1]]), (236, 232, 218))
        canvas.line(np.concatenate([np.stack([xs, upper_in], 1),
                                    np.stack([xs, lower_in], 1)[::-1]]), ident.lips * 0.45, 0.8,
                    closed=True)
    else:
        canvas.line(np.stack([xs, 0.5 * (upper_in + lower_in)], 1), ident.lips * 0.45, 0.9)
    for x, y in ((xs[0], ym[0]), (xs[-1], ym[-1])):  # shadowed mouth corners
        canvas.ellipse((x, y), (1.1, 0.9), ident.lips * 0.4)
    return np.array([eyes[0], eyes[1], (nx, ny), (xs[0], ym[0]), (xs[-1], ym[-1])])


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A colour gradient with low-frequency texture and a few shapes, RGB uint8."""
    grey = rng.uniform(40, 220)
    c0 = grey + rng.uniform(0.2, 0.6) * (rng.uniform(15, 240, 3) - grey)  # muted colours
    c1 = np.clip(c0 + rng.normal(0, 35, 3), 0, 255)
    gh, gw = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    a = rng.uniform(0, 2 * np.pi)
    u = np.cos(a) * np.linspace(0, 1, gw)[None, :] + np.sin(a) * np.linspace(0, 1, gh)[:, None]
    u = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    grid = c0 + u[..., None] * (c1 - c0) + rng.uniform(-1, 1, (gh, gw, 3)) * rng.uniform(0, 35)
    grid = np.clip(grid + 0.5, 0, 255).astype(np.uint8)
    # A smooth image through the grid values (the gradient plus low-frequency texture).
    image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(0, 4)):
        colour = _colour(0.5 * c0 + 0.5 * rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(5, 0.4 * max(width, height))
        if rng.random() < 0.5:
            cv2.circle(image, (int(x), int(y)), int(r), colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(image, (int(x - r), int(y - 0.6 * r)), (int(x + r), int(y + 0.6 * r)),
                          colour, -1, cv2.LINE_AA)
    return image


def _finish(rng: np.random.Generator, image: np.ndarray, face_xy, face_size: float) -> np.ndarray:
    """Lighting gradient, global gain, slight blur and noise; returns uint8."""
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.0, 0.3)
    gx = (np.arange(w, dtype=np.float32) - np.float32(face_xy[0])) / np.float32(face_size)
    gy = (np.arange(h, dtype=np.float32) - np.float32(face_xy[1])) / np.float32(face_size)
    ramp = np.float32(np.cos(a)) * gx[None, :] + np.float32(np.sin(a)) * gy[:, None]
    gain = np.float32(rng.uniform(0.8, 1.12)) * (1 + np.float32(strength) * np.clip(ramp, -1, 1))
    out *= gain[..., None]
    out += np.float32(rng.uniform(-12, 12))
    if rng.random() < 0.6:
        sigma = rng.uniform(0.3, 1.0)
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if rng.random() < 0.6:
        out += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(1, 5))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)) * scale, np.sin(np.radians(angle_deg)) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def eye_alignment(landmarks: np.ndarray) -> np.ndarray:
    """The 2x3 similarity mapping the landmarks' two eyes onto :data:`CANONICAL_EYES`."""
    p = np.asarray(landmarks, dtype=np.float64)[:2]
    p0, p1 = complex(*p[0]), complex(*p[1])
    q0, q1 = complex(*CANONICAL_EYES[0]), complex(*CANONICAL_EYES[1])
    if p1 == p0:
        raise ValueError("the two eye landmarks coincide")
    a = (q1 - q0) / (p1 - p0)
    b = q0 - a * p0
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def draw_face(rng: np.random.Generator, expression: int, size: int = 100
              ) -> tuple[np.ndarray, np.ndarray]:
    """One aligned face (RGB uint8, size x size) of class ``expression`` and its 5 landmarks.

    Landmarks are float64 (5, 2) x, y: left eye, right eye, nose, left mouth corner, right mouth
    corner (image-left first, as RAF-DB). The eyes sit at ``CANONICAL_EYES * size / 100``.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    ident = _draw_identity(rng)
    pose, _ = _draw_pose(rng, expression)
    canvas = _Canvas(_background(rng, size, size), _similarity(size / ALIGNED_SIZE, 0.0, 0.0, 0.0))
    lip_side = 1 if rng.random() < 0.5 else -1
    landmarks = canvas.map(_render_person(canvas, ident, pose, lip_side))
    image = _finish(rng, canvas.image, canvas.map([ident.face_centre])[0], canvas.scale * 45.0)
    return image, landmarks


def sample_face(seed: int = 0, expression: int = 3) -> np.ndarray:
    """One 100x100 aligned RGB face, for previews when no real RAF-DB is present."""
    rng = np.random.Generator(np.random.PCG64(seed64(seed, "sample-face", expression)))
    return draw_face(rng, expression, ALIGNED_SIZE)[0]


# --------------------------------------------------------------------------------------------
# One sample of the tree: original photo, landmarks, aligned crop, labels.


@dataclass
class Sample:
    """Everything written for one image."""

    name: str  # e.g. "train_00001"
    expression: int  # drawn class 0..6
    original: np.ndarray  # RGB uint8
    landmarks: np.ndarray  # (5, 2) annotated, in original pixels, rounded to 2 decimals
    aligned: np.ndarray  # RGB uint8 100x100
    distribution: np.ndarray  # (7,) soft label, sums to 1
    hard_label: int  # 0..6
    attributes: tuple  # gender, race, age


def _placement(rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
    """Original size and the canonical -> original similarity (aligned square kept inside)."""
    width = int(rng.integers(110, 261))
    height = int(np.clip(round(width * rng.uniform(0.75, 1.35)), 110, 260))
    angle = float(np.clip(rng.normal(0.0, 5.0), -12.0, 12.0))
    extent = abs(np.cos(np.radians(angle))) + abs(np.sin(np.radians(angle)))
    s_max = min(2.0, (min(width, height) - 4) / (ALIGNED_SIZE * extent))
    scale = float(np.exp(rng.uniform(np.log(0.85), np.log(max(s_max, 0.851)))))
    square = np.array([[0, 0], [ALIGNED_SIZE, 0], [0, ALIGNED_SIZE], [ALIGNED_SIZE, ALIGNED_SIZE]],
                      dtype=np.float64)
    corners = square @ _similarity(scale, angle, 0.0, 0.0)[:, :2].T
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    tx = rng.uniform(1.0 - lo[0], width - 2.0 - hi[0])
    ty = rng.uniform(1.0 - lo[1], height - 2.0 - hi[1])
    return width, height, _similarity(scale, angle, tx, ty)


def _soft_label(rng: np.random.Generator, expression: int, intensity: float
                ) -> tuple[np.ndarray, int]:
    """Annotator-vote-like distribution and hard label for an image of class ``expression``.

    About 2 % of rows are three-way ties and 2.5 % have a weak winner: the vote filter (BENCHMARK.md §1.3)
    drops both. About 2 % of hard labels are the most confusable neighbour (annotation noise).
    """
    first, second = _NEIGHBOURS[expression]
    others = [c for c in range(NUM_CLASSES) if c not in (expression, first, second)]
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    u = rng.random()
    if u < 0.02:  # three-way tie: 12, 12, 12, 4 of 40
        n = 40
        counts[[expression, first, second]] = 12
        counts[others[rng.integers(0, len(others))]] = 4
    elif u < 0.045:  # weak winner: 14, 11, 8, 7 of 40 -> T = 10, M = 3.5 <= 5
        n = 40
        counts[[expression, first, second]] = (14, 11, 8)
        counts[others[rng.integers(0, len(others))]] = 7
    else:
        n = int(rng.integers(32, 46))
        share = float(np.clip(0.42 + 0.42 * intensity + rng.normal(0.0, 0.08), 0.5, 0.97))
        counts[expression] = max(n // 2 + 1, int(round(share * n)))
        rest = n - counts[expression]
        to_first = int(rng.binomial(rest, rng.uniform(0.4, 0.8)))
        to_second = int(rng.binomial(rest - to_first, 0.5))
        counts[first] += to_first
        counts[second] += to_second
        counts[others] += rng.multinomial(rest - to_first - to_second, [1 / len(others)] * len(others))
    distribution = counts / n
    hard = expression
    if u >= 0.045 and rng.random() < 0.02:
        hard = first
    return distribution, hard


def make_sample(seed: int, split: str, index: int, expression: int) -> Sample:
    """Draw image ``index`` (1-based) of ``split`` with class ``expression``."""
    rng = np.random.Generator(np.random.PCG64(seed64(seed, "sample", split, index)))
    digits = 5 if split == "train" else 4
    name = f"{split}_{index:0{digits}d}"
    ident = _draw_identity(rng)
    pose, intensity = _draw_pose(rng, expression)
    width, height, transform = _placement(rng)
    canvas = _Canvas(_background(rng, width, height), transform)
    lip_side = 1 if rng.random() < 0.5 else -1
    truth = canvas.map(_render_person(canvas, ident, pose, lip_side))
    original = _finish(rng, canvas.image, canvas.map([ident.face_centre])[0], canvas.scale * 45.0)
    # Manual annotation: a little placement noise, written with 2 decimals.
    landmarks = np.round(truth + rng.normal(0.0, 0.3, truth.shape), 2)
    aligned = cv2.warpAffine(original, eye_alignment(landmarks), (ALIGNED_SIZE, ALIGNED_SIZE),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    distribution, hard = _soft_label(rng, expression, intensity)
    return Sample(name, expression, original, landmarks, aligned, distribution, hard,
                  (ident.gender, ident.race, ident.age))


def class_sequence(seed: int, split: str, count: int) -> list[int]:
    """Classes of images 1..count of ``split``: shuffled blocks of :data:`_BLOCK` (mild imbalance)."""
    classes: list[int] = []
    extras = [c for c, k in enumerate(_BLOCK_COUNTS) for _ in range(k - 1)]
    for block in range((count + _BLOCK - 1) // _BLOCK):
        rng = np.random.Generator(np.random.PCG64(seed64(seed, "sample-classes", split, block)))
        classes += [int(c) for c in rng.permutation(NUM_CLASSES)]
        classes += [int(c) for c in rng.permutation(extras)]
    return classes[:count]


# --------------------------------------------------------------------------------------------
# The tree


def _format_row(distribution: np.ndarray) -> str:
    return ",".join(f"{v:.4f}" for v in distribution)


def write_sample_tree(root: str | os.PathLike, n_train: int = 1200, n_test: int = 300,
                      seed: int = 0, progress: bool | None = None) -> Path:
    """Write a complete synthetic RAF-DB tree at ``root`` (the RAF-DB folder itself).

    ``progress``: a tqdm bar on stderr (one step per image); ``None`` shows it only when stderr is a
    terminal. It never changes the bytes written.

    The tree is built in a temporary sibling folder and renamed onto ``root`` at the end, so a
    reader never sees a half-written tree. Raises ValueError if ``root`` exists and is not an
    empty folder, or if the counts are not positive.
    """
    root = Path(root)
    for flag, n in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{flag} must be a positive integer, got {n!r}")
    if n_train > 99999 or n_test > 9999:
        raise ValueError("at most 99999 train and 9999 test images (RAF-DB's 5/4-digit ids)")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root}: exists and is not an empty folder; choose a new --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the tree is not
        aligned_dir = tmp / "basic" / "Image" / "aligned"
        original_dir = tmp / "basic" / "Image" / "original"
        manual_dir = tmp / "basic" / "Annotation" / "manual"
        label_dir = tmp / "basic" / "EmoLabel"
        for folder in (aligned_dir, original_dir, manual_dir, label_dir):
            folder.mkdir(parents=True)
        csv_rows: list[str] = []
        label_rows: list[str] = []
        if progress is None:
            progress = sys.stderr.isatty()
        with tqdm(total=n_train + n_test, unit="image", file=sys.stderr, disable=not progress,
                  desc=f"sample -> {root}") as bar:
            for split, count in (("train", n_train), ("test", n_test)):
                for index, expression in enumerate(class_sequence(seed, split, count), start=1):
                    sample = make_sample(seed, split, index, expression)
                    (aligned_dir / f"{sample.name}_aligned.jpg").write_bytes(encode_image(sample.aligned))
                    (original_dir / f"{sample.name}.jpg").write_bytes(encode_image(sample.original))
                    lines = [f"{x:.2f}\t{y:.2f}" for x, y in sample.landmarks]
                    lines += [str(v) for v in sample.attributes]
                    (manual_dir / f"{sample.name}_manu_attri.txt").write_text("\n".join(lines) + "\n")
                    csv_rows.append(_format_row(sample.distribution))
                    label_rows.append(f"{sample.name}.jpg {sample.hard_label + 1}")
                    bar.update(1)
        (label_dir / "list_patition_label.txt").write_text("\n".join(label_rows) + "\n")
        (tmp / "distribute_basic.csv").write_text("\n".join(csv_rows) + "\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return root


# --------------------------------------------------------------------------------------------
# FER2013/FER+ and class-folder samples (docs/BENCHMARK.md §9, §10)

FER_USAGES = ("Training", "PublicTest", "PrivateTest")


def _fer_votes(rng: np.random.Generator, ferplus_class: int, neighbour: int) -> np.ndarray:
    """Ten FER+-like annotator votes (8 emotions, unknown, NF) for a face of one class.

    About 3 % of rows tie three ways and 3 % have a weak winner (the FER+ filter drops both),
    2 % are mostly "unknown"/"NF" (dropped as well).
    """
    votes = np.zeros(10, dtype=np.int64)
    u = rng.random()
    if u < 0.03:  # three-way tie 3, 3, 3, 1
        others = [c for c in range(8) if c not in (ferplus_class, neighbour)]
        votes[[ferplus_class, neighbour, others[int(rng.integers(0, len(others)))]]] = 3
        votes[9] = 1
    elif u < 0.06:  # weak winner 4, 3, 3 -> 4 <= 5
        others = [c for c in range(8) if c not in (ferplus_class, neighbour)]
        votes[ferplus_class], votes[neighbour] = 4, 3
        votes[others[int(rng.integers(0, len(others)))]] = 3
    elif u < 0.08:  # not a face / unknown
        votes[8 + int(rng.integers(0, 2))] = 6
        votes[ferplus_class] = 4
    else:
        share = int(rng.integers(6, 11))
        votes[ferplus_class] = share
        rest = 10 - share
        to_neighbour = int(rng.binomial(rest, 0.6))
        votes[neighbour] += to_neighbour
        votes[rng.integers(0, 10, rest - to_neighbour)] += 1
        votes[ferplus_class] += max(0, 10 - int(votes.sum()))
    return votes


def write_fer_sample(root: str | os.PathLike, n_train: int = 280, n_public: int = 60, n_private: int = 60,
                     seed: int = 0, progress: bool | None = None) -> Path:
    """Write a synthetic FER2013/FER+ pair at ``root``: ``fer2013.csv`` and ``fer2013new.csv``.

    48x48 grey faces (the synthetic generator's, converted with OpenCV's luma), rows in the
    original's order (Training, then PublicTest, then PrivateTest), the ``emotion`` column in
    FER2013 order and FER+ votes in FER+ order; about 1 % of rows have an empty FER+ image name.
    Both files are written under temporary names and renamed; the same seed gives the same bytes.
    """
    from cli_common import atomic_write_text
    from datasets.classes import FER2013_CLASSES, FERPLUS_CLASSES, map_classes

    root = Path(root)
    counts = {"Training": n_train, "PublicTest": n_public, "PrivateTest": n_private}
    for usage, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 1 or n > 99999:
            raise ValueError(f"{usage}: the number of rows must be 1..99999, got {n!r}")
    to_fer2013 = map_classes(FER2013_CLASSES, CLASS_NAMES).dataset_to_model
    to_ferplus = map_classes(FERPLUS_CLASSES, CLASS_NAMES).dataset_to_model
    pixel_lines = ["emotion,pixels,Usage"]
    vote_lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    if progress is None:
        progress = sys.stderr.isatty()
    row = 0
    with tqdm(total=sum(counts.values()), unit="image", file=sys.stderr, disable=not progress,
              desc=f"FER sample -> {root}") as bar:
        for usage, count in counts.items():
            for index, expression in enumerate(class_sequence(seed, f"fer-{usage}", count), start=1):
                rng = np.random.Generator(np.random.PCG64(seed64(seed, "fer-sample", usage, index)))
                face, _ = draw_face(rng, expression, 48)
                grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
                pixel_lines.append(f"{to_fer2013[expression]},{' '.join(map(str, grey.ravel().tolist()))},{usage}")
                neighbour = to_ferplus[_NEIGHBOURS[expression][0]]
                votes = _fer_votes(rng, int(to_ferplus[expression]), int(neighbour))
                name = "" if rng.random() < 0.01 else f"fer{row:07d}.png"
                vote_lines.append(f"{usage},{name}," + ",".join(map(str, votes.tolist())))
                row += 1
                bar.update(1)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "fer2013.csv", "\n".join(pixel_lines) + "\n")
    atomic_write_text(root / "fer2013new.csv", "\n".join(vote_lines) + "\n")
    return root


# Folder names of the class-folder sample: FER-style spellings, so the synonym table is used.
FOLDER_NAMES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")


def write_folder_sample(root: str | os.PathLike, n_train: int = 140, n_val: int = 35, n_test: int = 70,
                        seed: int = 0, size: int = 64, progress: bool | None = None) -> Path:
    """Write a synthetic class-folder dataset: ``root/<split>/<class>/<split>_<index>.jpg`` (colour).

    Splits train, val and test; folder names from :data:`FOLDER_NAMES`. Built in a temporary
    sibling folder and renamed onto ``root`` (which must not exist or be empty).
    """
    root = Path(root)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0 or n > 99999:
            raise ValueError(f"{split}: the number of images must be 0..99999, got {n!r}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root}: exists and is not an empty folder; choose a new --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        with tqdm(total=sum(counts.values()), unit="image", file=sys.stderr, disable=not progress,
                  desc=f"folder sample -> {root}") as bar:
            for split, count in counts.items():
                for index, expression in enumerate(class_sequence(seed, f"folder-{split}", count), start=1):
                    rng = np.random.Generator(np.random.PCG64(seed64(seed, "folder-sample", split, index)))
                    face, _ = draw_face(rng, expression, size)
                    folder = tmp / split / FOLDER_NAMES[expression]
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{split}_{index:05d}.jpg").write_bytes(encode_image(face))
                    bar.update(1)
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return root


if __name__ == "__main__":  # a library module: its command is rafdb_dataset.py sample
    import sys

    print("synthetic_faces.py is the library behind the synthetic sample datasets; write one with\n"
          "  python3 rafdb_dataset.py sample --out DIR [--dataset rafdb|ferplus|folder] [--train N] [--test N]\n"
          "(python3 rafdb_dataset.py sample --help for every option)", file=sys.stderr)
    sys.exit(0 if set(sys.argv[1:]) <= {"-h", "--help"} else 2)
