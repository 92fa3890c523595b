#!/usr/bin/env bash
# Install what a one-node SLURM cluster on localhost needs (Debian/Ubuntu, as root):
# Slurm's controller, node daemon, accounting daemon and clients, munge, and MariaDB for
# accounting. Idempotent: does nothing when every program is already there.
# Used by scripts/slurm_cluster.py (and so by tests/test_slurm.py); safe to run by hand.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
PROGRAMS=(slurmctld slurmd slurmdbd sbatch sinfo sacct munged mariadbd mariadb-install-db)

missing=0
for prog in "${PROGRAMS[@]}"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 0 ]; then
    echo "slurm: already installed ($(PATH="$PATH:/usr/sbin" slurmctld -V))"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "slurm: installing needs root (apt-get); run: sudo $0" >&2
    exit 1
fi
command -v apt-get >/dev/null || { echo "slurm: no apt-get on this machine" >&2; exit 1; }

# The packages' install scripts try to start their services; a policy-rc.d that exits 101
# forbids that (the cluster script starts the daemons itself, as plain processes).
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
install() {
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${PACKAGES[@]}"
}
if ! install; then
    echo "slurm: install failed; refreshing the package lists and retrying" >&2
    apt-get update -q -o DPkg::Lock::Timeout=300
    install
fi
echo "slurm: installed ($(/usr/sbin/slurmctld -V))"
