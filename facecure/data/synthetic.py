"""The embedded default: procedurally rendered faces with identities.

No face data set with identity labels can be installed on a fresh machine, so identities are
drawn as seeded face parameters (face shape, skin, hair style and colour, eyes, brows, nose,
mouth, moles and beard) and every picture of an identity varies pose, lighting, expression,
background clutter, blur and noise. Identity `i` of a population always has the same face,
whatever the number of identities or pictures asked for: the parameters come from a random
stream seeded with (seed, population, i), and picture `j` from (seed, population, i, j).

Pictures are uint8 RGB arrays of shape (S, S, 3). Coordinates below are in face units: the
picture spans [-1, 1] in x (right) and y (down) before the pose transform.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

# Bump when the renderer changes: cached zoo weights and embeddings depend on it.
RENDERER_VERSION = 1
POPULATIONS = {"evaluation": 0, "public": 1, "candidates": 2}


@dataclass(frozen=True)
class FaceParams:
    """One identity's face, in face units and RGB colours in [0, 1]."""

    face_w: float
    face_h: float
    jaw: float
    skin: np.ndarray
    hair: np.ndarray
    hair_top: float
    hair_len: float
    fringe: float
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    iris: np.ndarray
    brow_gap: float
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_h: float
    lips: np.ndarray
    moles: np.ndarray  # (k, 3): x, y, radius
    beard: float  # 0 = none; else beard opacity


def identity_params(seed: int, population: str, identity: int) -> FaceParams:
    rng = np.random.default_rng([seed, POPULATIONS[population], identity])
    tone = rng.uniform(0.25, 0.95)
    skin = np.clip(np.array([tone, tone * rng.uniform(0.7, 0.85), tone * rng.uniform(0.5, 0.72)]), 0, 1)
    hair = rng.choice([[0.08, 0.06, 0.05], [0.35, 0.22, 0.1], [0.75, 0.6, 0.3],
                       [0.55, 0.2, 0.08], [0.6, 0.6, 0.6]]) * rng.uniform(0.7, 1.2)
    n_moles = rng.integers(0, 4)
    moles = np.column_stack([rng.uniform(-0.4, 0.4, n_moles), rng.uniform(-0.3, 0.5, n_moles),
                             rng.uniform(0.02, 0.045, n_moles)])
    return FaceParams(
        face_w=rng.uniform(0.48, 0.66), face_h=rng.uniform(0.66, 0.84), jaw=rng.uniform(0.0, 0.45),
        skin=skin, hair=np.clip(hair, 0, 1), hair_top=rng.uniform(0.05, 0.22),
        hair_len=rng.uniform(-0.3, 0.9), fringe=rng.uniform(-0.55, -0.25),
        eye_x=rng.uniform(0.17, 0.3), eye_y=rng.uniform(-0.18, -0.02), eye_w=rng.uniform(0.08, 0.14),
        eye_h=rng.uniform(0.035, 0.07), iris=rng.uniform(0.05, 0.6, 3),
        brow_gap=rng.uniform(0.08, 0.17), brow_thick=rng.uniform(0.015, 0.045),
        brow_tilt=rng.uniform(-0.35, 0.35), nose_len=rng.uniform(0.12, 0.3),
        nose_w=rng.uniform(0.05, 0.11), mouth_y=rng.uniform(0.32, 0.5),
        mouth_w=rng.uniform(0.13, 0.26), lip_h=rng.uniform(0.025, 0.06),
        lips=np.clip(skin * rng.uniform(0.55, 0.85) + np.array([0.12, 0.0, 0.0]), 0, 1),
        moles=moles, beard=float(rng.uniform(0.4, 0.9)) if rng.random() < 0.25 else 0.0,
    )


def _ellipse(x, y, cx, cy, rx, ry, soft):
    """Soft mask in [0, 1] of an axis-aligned ellipse, edge about `soft` face units wide."""
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 - d) * min(rx, ry) / soft + 0.5, 0.0, 1.0)


def _paint(img, mask, colour):
    img += mask[..., None] * (np.asarray(colour, dtype=np.float32) - img)


def render_picture(p: FaceParams, seed: int, population: str, identity: int, picture: int,
                   size: int) -> np.ndarray:
    """Render picture `picture` of identity `identity`: uint8 (size, size, 3) RGB."""
    rng = np.random.default_rng([seed, POPULATIONS[population], identity, picture, 7])
    soft = 1.6 / size  # about one pixel of anti-aliasing
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(lin, lin)

    # Background: a colour gradient and a few blobs of clutter.
    bg = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    bg2 = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    t = (u * rng.uniform(-1, 1) + v * rng.uniform(-1, 1) + 2) / 4
    img = bg + t[..., None] * (bg2 - bg)
    for _ in range(rng.integers(0, 4)):
        _paint(img, _ellipse(u, v, *rng.uniform(-1, 1, 2), *rng.uniform(0.1, 0.5, 2), soft)
               * rng.uniform(0.3, 1.0), rng.uniform(0, 1, 3))

    # Pose: roll, scale and shift of the whole head; yaw moves the features sideways.
    roll = rng.normal(0, 0.14)
    scale = rng.uniform(0.85, 1.08)
    cx, cy = rng.normal(0, 0.06, 2)
    yaw = np.clip(rng.normal(0, 0.4), -0.75, 0.75)
    c, s = np.cos(roll), np.sin(roll)
    x = (c * (u - cx) + s * (v - cy)) / scale
    y = (-s * (u - cx) + c * (v - cy)) / scale
    fx = x - yaw * 0.16  # feature coordinates: the face turns, the outline less so

    # Expression: smile, eye openness, raised brows.
    smile = rng.uniform(-0.3, 1.0)
    open_eye = rng.uniform(0.45, 1.15)
    brow_up = rng.normal(0, 0.025)

    # Hair behind the head, then the face.
    hair_mask = _ellipse(x, y, 0, -0.05, p.face_w + 0.09, p.face_h + p.hair_top, soft)
    hair_mask *= np.clip((p.hair_len - y) / soft, 0, 1)
    _paint(img, hair_mask, p.hair)
    for side in (-1, 1):
        _paint(img, _ellipse(x, y, side * (p.face_w * (1 - 0.5 * abs(yaw)) + 0.02) - yaw * 0.05,
                             0.0, 0.07, 0.13, soft), p.skin * 0.85)
    jaw_x = x / (1 - p.jaw * np.clip(y, 0, None))
    face = _ellipse(jaw_x, y, -yaw * 0.05, 0.05, p.face_w * (1 - 0.12 * abs(yaw)), p.face_h, soft)
    _paint(img, face, p.skin)
    if p.beard:
        beard = face * np.clip((y - (p.mouth_y - 0.12)) / 0.08, 0, 1) * p.beard
        _paint(img, beard, p.hair * 0.8)
    _paint(img, face * np.clip((p.fringe + p.hair_top * 0.5 - y) / 0.05, 0, 1), p.hair)

    # Eyes, irises, brows.
    gaze = rng.normal(0, 0.02, 2)
    for side in (-1, 1):
        ex = side * p.eye_x
        h = p.eye_h * open_eye
        _paint(img, _ellipse(fx, y, ex, p.eye_y, p.eye_w, h, soft), [0.93, 0.92, 0.9])
        iris = _ellipse(fx, y, ex + gaze[0], p.eye_y + gaze[1], p.eye_h * 0.95, p.eye_h * 0.95, soft)
        iris *= _ellipse(fx, y, ex, p.eye_y, p.eye_w, h, soft)
        _paint(img, iris, p.iris)
        _paint(img, iris * _ellipse(fx, y, ex + gaze[0], p.eye_y + gaze[1], p.eye_h * 0.4,
                                    p.eye_h * 0.4, soft), [0.02, 0.02, 0.02])
        by = p.eye_y - p.brow_gap - brow_up + side * p.brow_tilt * (fx - ex) * 0.5
        brow = np.clip((p.brow_thick - np.abs(y - by)) / soft + 0.5, 0, 1)
        brow *= _ellipse(fx, y, ex, p.eye_y - p.brow_gap, p.eye_w * 1.25, 0.12, soft)
        _paint(img, brow, p.hair * 0.7)

    # Nose: a shaded ridge and two nostrils; mouth: lips bent by the smile.
    ny = p.eye_y + 0.05
    _paint(img, _ellipse(fx, y, 0, ny + p.nose_len / 2, p.nose_w * 0.6, p.nose_len / 2, soft) * 0.35,
           p.skin * 0.7)
    for side in (-1, 1):
        _paint(img, _ellipse(fx, y, side * p.nose_w * 0.55, ny + p.nose_len, 0.025, 0.017, soft),
               p.skin * 0.4)
    my = y - p.mouth_y + smile * 0.9 * (fx ** 2 - p.mouth_w ** 2 / 3)
    lips = _ellipse(fx, my + p.mouth_y, 0, p.mouth_y, p.mouth_w * (1 + 0.15 * smile), p.lip_h, soft)
    _paint(img, lips, p.lips)
    _paint(img, lips * np.clip((0.012 - np.abs(my)) / soft, 0, 1), p.lips * 0.4)
    for mx, mol_y, r in p.moles:
        _paint(img, _ellipse(fx, y, mx, mol_y, r, r, soft) * face, p.skin * 0.45)

    # Lighting: a directional gradient over the face and an overall exposure.
    # Occlusion: sunglasses or an object in front of the lower face, now and then.
    occluder = rng.random()
    if occluder < 0.12:
        band = np.clip((0.06 - np.abs(y - p.eye_y)) / soft, 0, 1) * np.clip((0.5 - np.abs(fx)) / soft, 0, 1)
        _paint(img, band, rng.uniform(0, 0.25, 3))
    elif occluder < 0.24:
        _paint(img, _ellipse(u, v, rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.9),
                             rng.uniform(0.15, 0.35), rng.uniform(0.15, 0.35), soft), rng.uniform(0, 1, 3))

    light = rng.normal(0, 0.45, 2)
    gain = rng.uniform(0.55, 1.3) * (1 + (x * light[0] + y * light[1]) * face * 0.6)
    img = img * gain[..., None] + rng.normal(0, 0.06, 3)  # colour cast

    blur = rng.uniform(0.0, 1.3) * size / 64
    if blur > 0.2:
        img = gaussian_filter(img, sigma=(blur, blur, 0), mode="nearest")
    img = img + rng.normal(0, rng.uniform(0.0, 0.04), img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_identity(seed: int, population: str, identity: int, n_pictures: int,
                    size: int) -> list[np.ndarray]:
    params = identity_params(seed, population, identity)
    return [render_picture(params, seed, population, identity, j, size) for j in range(n_pictures)]
