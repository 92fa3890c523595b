"""Where the project's config tree lives, and the `facecure_root` resolver for configs."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(os.environ.get("FACECURE_ROOT", Path(__file__).resolve().parents[1]))
CONF_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("facecure_root"):
    OmegaConf.register_new_resolver("facecure_root", lambda: str(PROJECT_ROOT))
