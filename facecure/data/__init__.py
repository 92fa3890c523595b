"""Data: face pictures with identities, the split, the attacker users."""
from facecure.data.dataset import FaceDataset, Picture, Split, choose_attackers, split_dataset
from facecure.data.folder import folder_faces
from facecure.data.images import UnreadablePicture, load_picture, to_rgb
from facecure.data.synthetic_dataset import synthetic_faces

__all__ = ["FaceDataset", "Picture", "Split", "UnreadablePicture", "choose_attackers",
           "folder_faces", "load_picture", "split_dataset", "synthetic_faces", "to_rgb"]
