#!/usr/bin/env bash
# Builds the release binary and the files generated from its command line definition
# (src/cli.rs) that every package ships: the man page and the bash, zsh and fish completions;
# plus stripped copies of the binary and of the user generator (agent-relay-generator) for the .rpm.
# Usage: packaging/build-assets.sh [CARGO_FLAG...]   (default: --locked; the PKGBUILD passes --frozen)
# Writes target/release/agent-relay-systemd, target/release/agent-relay-generator and target/assets/*.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || set -- --locked
cargo build "$@" --release --bin agent-relay-systemd --bin agent-relay-generator

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
# The .rpm ships these copies: cargo-generate-rpm packs files as they are, while cargo-deb and makepkg
# strip the binaries themselves.
strip -o "$out/agent-relay-systemd" "$bin"
strip -o "$out/agent-relay-generator" "$target/release/agent-relay-generator"
echo "assets in $out: $(cd "$out" && echo *)"
