"""Data: face pictures with identities, the split, the attacker users."""
from facecure.data.dataset import FaceDataset, Picture, Split, choose_attackers, split_dataset
from facecure.data.folder import folder_faces
from facecure.data.images import UnreadablePicture, load_picture, to_rgb
from facecure.data.presets import celeba_faces, facescrub_faces
from facecure.data.synthetic_dataset import synthetic_faces

# Keys of a data config that other groups read (attacks: `${oc.select:data.attack_size,...}`),
# not arguments of the data set's builder.
SHARED_KEYS = ("attack_size",)


def build_dataset(node, progress: bool = True) -> FaceDataset:
    """Instantiate a data config (its `_target_`), minus the keys other groups read."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    spec = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
            if k not in SHARED_KEYS}
    return instantiate(spec, progress=progress)


__all__ = ["FaceDataset", "Picture", "Split", "UnreadablePicture", "build_dataset",
           "celeba_faces", "choose_attackers", "facescrub_faces", "folder_faces", "load_picture", "split_dataset",
           "synthetic_faces", "to_rgb"]
