"""`facecure`: the Hydra command. All work happens in `facecure.app.run`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from facecure import paths as _paths  # noqa: F401  (registers the facecure_root resolver)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from facecure.app import run

    run(cfg)


if __name__ == "__main__":
    main()
