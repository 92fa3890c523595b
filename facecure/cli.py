"""`facecure`: the Hydra command. All work happens in `facecure.app.run`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from facecure.paths import CONF_DIR  # also registers the facecure_root resolver


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from facecure.app import run

    run(cfg)


if __name__ == "__main__":
    main()
