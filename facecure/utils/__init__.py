"""Small shared helpers: content hashing, atomic writes, seeding."""
from facecure.utils.io import atomic_write_bytes, atomic_write_text, fingerprint, picture_key

__all__ = ["atomic_write_bytes", "atomic_write_text", "fingerprint", "picture_key"]
