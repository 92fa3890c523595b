"""`facecure`: the Hydra command. All work happens in `facecure.app.run`."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from facecure.paths import CONF_DIR  # also registers the facecure_root resolver


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from facecure.app import run, run_dir_of
    from facecure.sweep import in_multirun, record_failure

    try:
        run(cfg)
    except Exception as error:
        # In a sweep, one failed job must not hide the others: record it and go on (the sweep
        # summary exits non-zero at the end). A single run fails loudly as usual.
        if not in_multirun() or cfg.get("fail_fast", False):
            raise
        record_failure(run_dir_of(cfg), error)


if __name__ == "__main__":
    main()
