#!/usr/bin/env bash
# Builds the browser page's wasm module into web/pkg (gitignored):
#   cargo build --target wasm32-unknown-unknown --release   (web/wgcnn-web, a cdylib over wgcnn)
#   wasm-bindgen --target web                               (the JS glue, pkg/wgcnn_web.js)
#   wasm-opt -O3, when binaryen is installed
# and reports the .wasm size, which must stay <= 5 MB. Installs the wasm32 target and the
# wasm-bindgen-cli whose version equals the wasm-bindgen in web/wgcnn-web/Cargo.lock when
# they are missing. Serve the page with: python3 -m http.server -d web 8000 --bind 127.0.0.1
set -euo pipefail

cd "$(dirname "$0")/.."
crate=web/wgcnn-web
out=web/pkg
limit=$((5 * 1000 * 1000))

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown

# the CLI must be exactly the library's version (the JS glue format changes between them)
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$crate/Cargo.lock")
[ -n "$want" ] || { echo "no wasm-bindgen in $crate/Cargo.lock" >&2; exit 1; }
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
    echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
    # opt-level 1: the CLI's speed hardly matters, its cold compile (CI) does
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install wasm-bindgen-cli --version "$want"
fi

# target/wasm: the main crate's target/ (ignored), apart from the native build's lock
target_dir="$PWD/target/wasm"
cargo build --manifest-path "$crate/Cargo.toml" --target wasm32-unknown-unknown --release \
    --target-dir "$target_dir"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
    "$target_dir/wasm32-unknown-unknown/release/wgcnn_web.wasm"

wasm="$out/wgcnn_web_bg.wasm"
if command -v wasm-opt >/dev/null; then
    before=$(stat -c %s "$wasm")
    wasm-opt -O3 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types "$wasm" -o "$wasm.opt"
    mv "$wasm.opt" "$wasm"
    echo "wasm-opt -O3: $before -> $(stat -c %s "$wasm") bytes"
else
    echo "wasm-opt not found (apt-get install binaryen): the module is wasm-bindgen's output"
fi
size=$(stat -c %s "$wasm")
awk -v s="$size" 'BEGIN { printf "web/pkg/wgcnn_web_bg.wasm: %d bytes (%.2f MB, limit 5 MB)\n", s, s / 1e6 }'
if [ "$size" -gt "$limit" ]; then
    echo "the wasm module is larger than 5 MB" >&2
    exit 1
fi
echo "serve: python3 -m http.server -d web 8000 --bind 127.0.0.1  ->  http://127.0.0.1:8000/"
