#!/usr/bin/env bash
# Builds the release binary and the files generated from its command line definition
# (src/cli.rs) that every package ships: the man page and the bash, zsh and fish completions;
# plus a stripped copy of the binary for the .rpm.
# Usage: packaging/build-assets.sh [CARGO_FLAG...]   (default: --locked; the PKGBUILD passes --frozen)
# Writes target/release/agent-relay-systemd and target/assets/*.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || set -- --locked
cargo build "$@" --release --bin agent-relay-systemd

target=${CARGO_TARGET_DIR:-target}
bin=$target/release/agent-relay-systemd
out=$target/assets
rm -rf "$out"
mkdir -p "$out"
# -n: no name or time stamp in the gzip header, so the page is the same byte for byte each build.
"$bin" manpage | gzip -9n >"$out/agent-relay-systemd.1.gz"
"$bin" completions bash >"$out/agent-relay-systemd.bash"
"$bin" completions zsh >"$out/_agent-relay-systemd"
"$bin" completions fish >"$out/agent-relay-systemd.fish"
# The .rpm ships this copy: cargo-generate-rpm packs files as they are, while cargo-deb and makepkg
# strip the binary themselves.
strip -o "$out/agent-relay-systemd" "$bin"
echo "assets in $out: $(cd "$out" && echo *)"
