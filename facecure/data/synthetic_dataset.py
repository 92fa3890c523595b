"""`data=synthetic`: the rendered population as a FaceDataset."""
from __future__ import annotations

from tqdm.auto import tqdm

from facecure.data.dataset import FaceDataset, Picture
from facecure.data.synthetic import render_identity


def synthetic_faces(n_identities: int = 100, pictures_per_identity: int = 20, image_size: int = 64,
                    seed: int = 0, population: str = "evaluation", progress: bool = True) -> FaceDataset:
    """Render `n_identities` x `pictures_per_identity` pictures of `image_size`^2 pixels.

    `population` keeps data sets apart: the zoo trains on "public", experiments evaluate on
    "evaluation", so the identities a model is scored on are never ones it was trained on.
    """
    identities = {}
    for i in tqdm(range(n_identities), desc=f"render {population} faces", disable=not progress,
                  unit="id", leave=False):
        name = f"{population[:4]}{i:05d}"
        identities[name] = [Picture.from_pixels(name, f"{j:04d}.png", px) for j, px in
                            enumerate(render_identity(seed, population, i, pictures_per_identity,
                                                      image_size))]
    return FaceDataset(f"synthetic-{population}", identities, synthetic=True, aligned=True)
