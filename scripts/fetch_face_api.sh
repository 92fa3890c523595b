#!/usr/bin/env bash
# Fetch the npm package @vladmandic/face-api (MIT) into the FaceCure cache: its model/ folder holds
# the tfjs port of dlib's face-recognition ResNet that the `dlib` extractor loads. Only the npm
# registry is contacted (`npm pack`); nothing comes from a model hub. Idempotent.
#   usage: scripts/fetch_face_api.sh [DEST]   (default: ${FACECURE_CACHE:-.cache}/face-api)
set -euo pipefail

VERSION=1.7.15
DEST="${1:-${FACECURE_CACHE:-.cache}/face-api}"
MANIFEST="$DEST/model/face_recognition_model-weights_manifest.json"
STAMP="$DEST/.face-api-$VERSION"

if [[ -f "$STAMP" && -f "$MANIFEST" ]]; then
    echo "face-api $VERSION already in $DEST"
    exit 0
fi
command -v npm >/dev/null || { echo "needs npm (e.g. apt-get install npm) to fetch @vladmandic/face-api" >&2; exit 1; }

# Unpack next to DEST and rename into place, so an interrupted fetch never looks complete.
mkdir -p "$(dirname "$DEST")"
WORK="$(mktemp -d "$(dirname "$DEST")/.face-api.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
TARBALL="$(cd "$WORK" && npm pack --silent "@vladmandic/face-api@$VERSION" | tail -n 1)"
mkdir "$WORK/package"
tar -xzf "$WORK/$TARBALL" -C "$WORK/package" --strip-components=1
touch "$WORK/package/.face-api-$VERSION"
rm -rf "$DEST"
mv "$WORK/package" "$DEST"
echo "face-api $VERSION fetched into $DEST"
