"""`facecure`: the Hydra command (all work happens in `facecure.app.run`), and
`facecure audit ...` (facecure/audit: a person's check of their own protected photos)."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from facecure.paths import CONF_DIR  # also registers the facecure_root resolver


def main() -> int | None:
    """`facecure audit ...` and `facecure protect ...` have their own command lines (facecure/
    audit); anything else is Hydra's."""
    if len(sys.argv) > 1 and sys.argv[1] == "audit":
        from facecure.audit.cli import main as audit

        return audit()
    if len(sys.argv) > 1 and sys.argv[1] == "protect":
        from facecure.audit.protect import main as protect

        return protect()
    return experiment()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def experiment(cfg: DictConfig) -> None:
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
    sys.exit(main())
