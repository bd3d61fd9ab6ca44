"""Offline augmentation with albumentations (the augment stage packs the result into data/train).

Only transforms whose effect a GAN must not learn to reproduce belong here (a
horizontal flip is fine: mirrored faces are still faces). Colour jitter, cutout
and the like leak into the generated images; they belong to training-time
augmentation (DiffAugment) instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from anime_avatar.artifacts.trainset import Variant
from anime_avatar.core.errors import ParamsError
from anime_avatar.core.params import AugmentParams, TransformSpec


def _transform(spec: TransformSpec, key: str, **overrides: Any):  # -> albumentations.BasicTransform
    """One albumentations transform from its spec; a bad name or argument raises ParamsError naming ``key``."""
    import albumentations as A

    cls = getattr(A, spec.name, None)
    if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
        raise ParamsError(f"{key}.name: {spec.name!r} is not an albumentations transform")
    try:
        with warnings.catch_warnings():
            # albumentations only warns about unknown arguments; a typo must not pass silently.
            warnings.simplefilter("error", UserWarning)
            return cls(**{**spec.kwargs, **overrides})
    except (TypeError, ValueError, UserWarning) as err:
        raise ParamsError(f"{key} ({spec.name}): {err}") from None


DETERMINISM_DRAWS = 32  # draws that must all agree before a pipeline is called deterministic (a p=0.5 flip: 2**-32)


def build_pipeline(params: AugmentParams):  # -> albumentations.Compose
    """An albumentations Compose from ``augment.transforms``; a bad entry raises ParamsError naming it."""
    import albumentations as A

    transforms = [_transform(spec, f"augment.transforms[{i}]") for i, spec in enumerate(params.transforms)]
    return A.Compose(transforms, seed=params.seed)


def check_transforms(params: AugmentParams, image_size: int) -> None:
    """Apply every transform, forced on (p=1), to a sample crop of ``image_size``: one that cannot apply
    to the crops, or that changes their size or type, raises ParamsError naming it.

    The augment stage calls this first, before any face is loaded or anything is written.
    """
    import albumentations as A

    pipeline = build_pipeline(params)  # names and arguments first
    sample = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    # Some transform has p > 0 and, forced on, changes the sample (a flip with p 0.05 rarely shows in a few draws
    # of the whole pipeline); else the draws decide (a RandomScale forced once may have drawn scale 1).
    can_change = False
    for i, spec in enumerate(params.transforms):
        key = f"augment.transforms[{i}] ({spec.name})"
        forced = _transform(spec, f"augment.transforms[{i}]", p=1.0)
        try:
            out = A.Compose([forced], seed=0)(image=sample)["image"]
        except Exception as err:  # transforms raise their own types (CropSizeError, ...): all mean "cannot apply"
            raise ParamsError(
                f"{key} cannot apply to the {image_size}x{image_size} face crops (detect.image_size): {err}"
            ) from None
        if out.dtype != np.uint8 or out.shape != sample.shape:
            raise ParamsError(
                f"{key} must keep the crops' size and uint8 type: it turns {image_size}x{image_size} uint8 "
                f"into {'x'.join(map(str, out.shape[:2][::-1]))} {out.dtype}"
            )
        can_change = can_change or (pipeline.transforms[i].p > 0 and not np.array_equal(out, sample))
    if (
        params.copies
        and params.keep_original
        and not can_change
        and all(np.array_equal(sample, pipeline(image=sample)["image"]) for _ in range(DETERMINISM_DRAWS))
    ):
        raise ParamsError(
            f"augment.copies is {params.copies} with augment.keep_original, but augment.transforms never change "
            "an image (none, or each with p: 0): every face would be in the training set "
            f"{params.copies + 1} times, unchanged; use copies: 0, or a transform that changes the image such "
            "as {name: HorizontalFlip, p: 0.5}"
        )
    if params.copies > 1:
        # A pipeline that draws the same image every time makes copies that are all one image: wasted work.
        first = pipeline(image=sample)["image"]
        if all(np.array_equal(first, pipeline(image=sample)["image"]) for _ in range(DETERMINISM_DRAWS)):
            raise ParamsError(
                f"augment.copies is {params.copies} but augment.transforms draw the same image every time "
                "(no random transform, or each with p: 1.0 and nothing else random): the copies would be "
                "identical; use copies: 1, or a random transform such as {name: HorizontalFlip, p: 0.5}"
            )


def augmented_images(
    faces: Sequence[np.ndarray], face_ids: Sequence[str], params: AugmentParams
) -> Iterator[np.ndarray]:
    """The training images one at a time, in the training set's order: the originals first if kept, then each
    copy of every face. ``faces`` is read once per pass (a lazy ``FaceFiles`` keeps one crop in memory).

    The random draws come in that same order, so the images are the ones a whole-set pass would make.
    """
    pipeline = build_pipeline(params) if params.copies else None
    if params.keep_original:
        yield from faces
    first = 1 if params.keep_original else 0
    for c in range(params.copies):
        assert pipeline is not None
        for i, face in enumerate(faces):
            image = pipeline(image=face)["image"]
            if image.dtype != np.uint8 or image.shape != face.shape:  # a transform that resizes only sometimes
                raise ParamsError(
                    "augment.transforms must keep the image size and uint8 type: copy "
                    f"{first + c} of face {face_ids[i]} came out {image.dtype} {image.shape} from {face.shape} "
                    "(a transform such as RandomScale changes the size on some draws only)"
                )
            yield image


def train_variants(face_ids: Sequence[str], params: AugmentParams) -> list[Variant]:
    """Which face and copy each training image of ``augmented_images`` comes from, in the same order."""
    return [Variant(fid, copy) for copy in range(per_face(params)) for fid in face_ids]


def augment_faces(
    faces: np.ndarray, face_ids: Sequence[str], params: AugmentParams
) -> tuple[np.ndarray, list[Variant]]:
    """The whole training set as one array (small sets; the stage streams ``augmented_images`` instead)."""
    images = np.stack(list(augmented_images(faces, face_ids, params)))
    return images, train_variants(face_ids, params)


def per_face(params: AugmentParams) -> int:
    """How many training images each face gives."""
    return params.copies + int(params.keep_original)
