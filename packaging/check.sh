#!/usr/bin/env bash
# Builds the .deb and the .rpm and checks what they install: exact file lists, modes and
# dependency fields; the extracted binary runs and the extracted units pass
# `systemd-analyze --user verify`; the extracted user generator turns an .agent file into a unit
# that verifies and reports a broken one in one line; the .deb's maintainer scripts enable the reaper timer for all
# users on install and drop it on purge, run by a real `dpkg --root` into a throwaway root, with
# the host's systemd and dpkg state checked unchanged; the Arch PKGBUILD parses, prints its
# .SRCINFO, and its package() installs the expected tree.
# Run as root on Debian 12 (installs cargo-deb, cargo-generate-rpm, rpm, makepkg if missing):
#   bash packaging/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
name=agent-relay-systemd
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # makepkg runs as nobody in here

fail() {
  echo "packaging check FAILED: $*" >&2
  exit 1
}
# same WHAT EXPECTED-FILE ACTUAL-FILE: fails with a diff unless the two are equal.
same() {
  diff -u "$2" "$3" >"$work/diff" || {
    cat "$work/diff" >&2
    fail "$1 differs from what is expected (- expected, + actual)"
  }
}

echo "-- tools"
cargo_tool() { # CRATE VERSION: the subcommand cargo would run must be that version
  if [ "$(cargo "${1#cargo-}" --version 2>/dev/null)" = "$1 $2" ]; then
    echo "$1 $2 present"
  else
    cargo install --locked --quiet "$1" --version "$2"
  fi
}
cargo_tool cargo-deb "$CARGO_DEB_VERSION"
cargo_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
# rpm: reads the .rpm (rpm -qp, rpm2archive). pacman-package-manager + makepkg: --printsrcinfo.
need=()
for p in rpm makepkg pacman-package-manager; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "-- build"
bash packaging/build-assets.sh
cargo deb --no-build --output "$work/$name.deb" >/dev/null
cargo generate-rpm --output "$work/$name.rpm" >/dev/null
deb=$work/$name.deb
rpm=$work/$name.rpm

echo "-- .deb: files, modes, fields"
# Owner as uid/gid: cargo-deb writes no user or group names into the tar.
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' | sort -k3 >"$work/deb.files"
sort -k3 >"$work/deb.want" <<EOF
drwxr-xr-x 0/0 ./usr/
drwxr-xr-x 0/0 ./usr/bin/
-rwxr-xr-x 0/0 ./usr/bin/$name
drwxr-xr-x 0/0 ./usr/lib/
drwxr-xr-x 0/0 ./usr/lib/systemd/
drwxr-xr-x 0/0 ./usr/lib/systemd/user/
-rw-r--r-- 0/0 ./usr/lib/systemd/user/agent-relay-reap.service
-rw-r--r-- 0/0 ./usr/lib/systemd/user/agent-relay-reap.timer
-rw-r--r-- 0/0 ./usr/lib/systemd/user/agent_relay.slice
drwxr-xr-x 0/0 ./usr/lib/systemd/user-generators/
-rwxr-xr-x 0/0 ./usr/lib/systemd/user-generators/agent-relay-generator
drwxr-xr-x 0/0 ./usr/share/
drwxr-xr-x 0/0 ./usr/share/bash-completion/
drwxr-xr-x 0/0 ./usr/share/bash-completion/completions/
-rw-r--r-- 0/0 ./usr/share/bash-completion/completions/$name
drwxr-xr-x 0/0 ./usr/share/doc/
drwxr-xr-x 0/0 ./usr/share/doc/$name/
-rw-r--r-- 0/0 ./usr/share/doc/$name/README.md
-rw-r--r-- 0/0 ./usr/share/doc/$name/copyright
drwxr-xr-x 0/0 ./usr/share/fish/
drwxr-xr-x 0/0 ./usr/share/fish/vendor_completions.d/
-rw-r--r-- 0/0 ./usr/share/fish/vendor_completions.d/$name.fish
drwxr-xr-x 0/0 ./usr/share/man/
drwxr-xr-x 0/0 ./usr/share/man/man1/
-rw-r--r-- 0/0 ./usr/share/man/man1/$name.1.gz
drwxr-xr-x 0/0 ./usr/share/zsh/
drwxr-xr-x 0/0 ./usr/share/zsh/vendor-completions/
-rw-r--r-- 0/0 ./usr/share/zsh/vendor-completions/_$name
EOF
same ".deb file list" "$work/deb.want" "$work/deb.files"

[ "$(dpkg-deb -f "$deb" Package)" = "$name" ] || fail ".deb Package is not $name"
[ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] || fail ".deb Version is not $version-1"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$(dpkg --print-architecture)" ] || fail ".deb Architecture"
# The synopsis is Cargo.toml's description, on one line (cargo-deb wraps one longer than 79).
synopsis=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$(dpkg-deb -f "$deb" Description | head -n 1)" = "$synopsis" ] || fail ".deb synopsis is not one line"
# Depends: the shared libraries $auto found, then the ones the product needs at run time.
dpkg-deb -f "$deb" Depends | sed 's/, /\n/g' >"$work/deb.depends"
grep -v '^lib' "$work/deb.depends" >"$work/deb.depends.named" || true
cat >"$work/deb.depends.want" <<EOF
dbus-user-session | default-dbus-session-bus
init-system-helpers (>= 1.63)
systemd
EOF
same ".deb Depends (besides shared libraries)" "$work/deb.depends.want" "$work/deb.depends.named"
grep -qE '^libc6 \(>= [0-9.]+\)$' "$work/deb.depends" || fail ".deb Depends lacks libc6 (\$auto)"
# tmux is recommended, not required: agents run without it, terminals need it.
[ "$(dpkg-deb -f "$deb" Recommends)" = "tmux" ] || fail ".deb Recommends is not tmux"
grep '^lib' "$work/deb.depends" | grep -vqE '^lib[a-z0-9.+-]+ \(>= [^)]+\)$' && fail ".deb Depends has an odd library entry"
# The maintainer scripts are ours, byte for byte, and executable.
dpkg-deb -e "$deb" "$work/control"
for s in postinst prerm postrm; do
  cmp -s "packaging/debian/$s" "$work/control/$s" || fail ".deb $s is not packaging/debian/$s"
  [ "$(stat -c %a "$work/control/$s")" = 755 ] || fail ".deb $s is not mode 755"
done
members=$(cd "$work/control" && echo *)
[ "$members" = "control postinst postrm prerm" ] || fail ".deb control members: $members"

echo "-- .rpm: files, modes, fields, scriptlets"
rpm -qp --queryformat '[%{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm" 2>/dev/null |
  sort -k3 >"$work/rpm.files"
sort -k3 >"$work/rpm.want" <<EOF
-rwxr-xr-x root/root /usr/bin/$name
-rw-r--r-- root/root /usr/lib/systemd/user/agent-relay-reap.service
-rw-r--r-- root/root /usr/lib/systemd/user/agent-relay-reap.timer
-rw-r--r-- root/root /usr/lib/systemd/user/agent_relay.slice
-rwxr-xr-x root/root /usr/lib/systemd/user-generators/agent-relay-generator
-rw-r--r-- root/root /usr/lib/systemd/user-preset/80-$name.preset
-rw-r--r-- root/root /usr/share/bash-completion/completions/$name
-rw-r--r-- root/root /usr/share/doc/$name/README.md
-rw-r--r-- root/root /usr/share/fish/vendor_completions.d/$name.fish
-rw-r--r-- root/root /usr/share/man/man1/$name.1.gz
-rw-r--r-- root/root /usr/share/zsh/site-functions/_$name
EOF
same ".rpm file list" "$work/rpm.want" "$work/rpm.files"
[ "$(rpm -qp --queryformat '%{NAME} %{VERSION}' "$rpm" 2>/dev/null)" = "$name $version" ] || fail ".rpm name/version"
rpm -qp --queryformat '[%{REQUIREFLAGS:deptype} %{REQUIRENAME}\n]' "$rpm" 2>/dev/null |
  grep -vE '^rpmlib |^manual (lib[^ ]*\.so\.[0-9]+\(|ld-linux[^ ]*\.so\.[0-9]+\(|rtld\()' | sort >"$work/rpm.requires"
sort >"$work/rpm.requires.want" <<EOF
manual /bin/sh
post,interp /bin/sh
preun,interp /bin/sh
manual dbus
manual systemd
EOF
same ".rpm Requires (besides rpmlib() and shared libraries)" "$work/rpm.requires.want" "$work/rpm.requires"
rpm -qp --requires "$rpm" 2>/dev/null | grep -q '^libc\.so\.6' || fail ".rpm Requires lacks libc.so.6 (auto-req)"
rpm -qp --recommends "$rpm" 2>/dev/null | grep -qx 'tmux' || fail ".rpm Recommends lacks tmux"
rpm -qp --scripts "$rpm" 2>/dev/null >"$work/rpm.scripts"
{
  echo "postinstall scriptlet:"
  cat packaging/rpm/post
  echo
  echo "preuninstall scriptlet:"
  cat packaging/rpm/preun
  echo
} >"$work/rpm.scripts.want"
same ".rpm scriptlets" "$work/rpm.scripts.want" "$work/rpm.scripts"

echo "-- extracted packages: the binary runs, the units verify"
x=$work/deb-root
dpkg-deb -x "$deb" "$x"
got=$("$x/usr/bin/$name" --version)
[ "$got" = "$name $version" ] || fail "extracted .deb binary --version says '$got'"
mkdir -p "$work/rpm-root"
rpm2archive - <"$rpm" | tar -xzf - -C "$work/rpm-root"
got=$("$work/rpm-root/usr/bin/$name" --version)
[ "$got" = "$name $version" ] || fail "extracted .rpm binary --version says '$got'"
for f in usr/lib/systemd/user/agent_relay.slice usr/lib/systemd/user/agent-relay-reap.service \
  usr/lib/systemd/user/agent-relay-reap.timer usr/share/man/man1/$name.1.gz; do
  cmp -s "$x/$f" "$work/rpm-root/$f" || fail "/$f differs between the .deb and the .rpm"
done
bash -n "$x/usr/share/bash-completion/completions/$name" || fail "bash completion does not parse"
mkdir -p "$work/verify/run" "$work/verify/units"
chmod 700 "$work/verify/run"
cp "$x"/usr/lib/systemd/user/* "$work/verify/units/"
# The units name /usr/bin/…; verify needs that binary to exist, so point them at the extracted one.
sed -i "s#/usr/bin/$name#$x/usr/bin/$name#" "$work/verify/units/"*.service
XDG_RUNTIME_DIR="$work/verify/run" MANPATH="$x/usr/share/man" \
  systemd-analyze --user verify "$work/verify/units/"*
echo "-- extracted generator: a declared agent becomes a unit that verifies, a broken one one line"
for root in "$x" "$work/rpm-root"; do
  [ -x "$root/usr/lib/systemd/user-generators/agent-relay-generator" ] || fail "$root has no executable generator"
done
g=$work/generator
mkdir -p "$g/bin" "$g/home/projects/app" "$g/config/agent-relay/agents" "$g/out" "$g/run"
chmod 700 "$g/run"
# Side by side, as in a build tree: the generator names the agent-relay-systemd beside it.
cp "$x/usr/bin/$name" "$x/usr/lib/systemd/user-generators/agent-relay-generator" "$g/bin/"
printf '{"baseDir":"%s","token":"check-token","runnerCommand":["/bin/true"]}' "$g/home/projects" >"$g/home/orchestrator.json"
printf '[Agent]\nProvider=claude\nCwd=~/projects/app\n[Install]\nWantedBy=default.target\n' \
  >"$g/config/agent-relay/agents/check.agent"
printf '[Agent]\nProvider=claude\n' >"$g/config/agent-relay/agents/broken.agent"
env -i PATH=/usr/bin:/bin HOME="$g/home" XDG_CONFIG_HOME="$g/config" XDG_RUNTIME_DIR="$g/run" \
  XDG_STATE_HOME="$g/state" AGENT_RELAY_ORCHESTRATOR_CONFIG="$g/home/orchestrator.json" \
  "$g/bin/agent-relay-generator" "$g/out" "$g/out" "$g/out" 2>"$g/stderr" || fail "the generator exited non-zero"
unit=$(cd "$g/out" && echo agent-relay-managed-*.service)
[ -f "$g/out/$unit" ] || fail "the generator wrote no unit for check.agent: $(ls -A "$g/out")"
[ "$(readlink "$g/out/check.agent.service")" = "$unit" ] || fail "no alias check.agent.service -> $unit"
[ "$(readlink "$g/out/default.target.wants/$unit")" = "../$unit" ] || fail "no default.target.wants link"
grep -q check-token "$g/out/$unit" && fail "the token is in the generated unit"
[ "$(wc -l <"$g/stderr")" = 1 ] && grep -q "broken.agent: no Cwd=" "$g/stderr" ||
  fail "the broken .agent file is not one line on stderr: $(cat "$g/stderr")"
XDG_RUNTIME_DIR="$g/run" systemd-analyze --user verify --man=no "$g/out/$unit"
# The man page renders without groff warnings.
warnings=$(MANWIDTH=80 man --warnings -l "$x/usr/share/man/man1/$name.1.gz" 2>&1 >/dev/null)
[ -z "$warnings" ] || fail "man page warnings: $warnings"

echo "-- .deb maintainer scripts: dpkg --root install, upgrade, remove, purge"
host_state() {
  {
    find /etc/systemd/user /var/lib/systemd \( -path '/etc/systemd/user*' -o -path '/var/lib/systemd/deb-systemd*' \) \
      -printf '%p %y %m %s %T@ %l\n' 2>/dev/null | sort || true
    sha256sum /var/lib/dpkg/status
    find /var/lib/dpkg/info -name "$name.*" | sort
  } >"$1"
}
host_state "$work/host.before"
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# --force-script-chrootless: run the scripts on the host's tools (deb-systemd-helper) with
# DPKG_ROOT=$root rather than chrooting into an empty root; --force-depends: the root has no
# packages. Nothing outside $root is written (checked below).
dpkgr() { dpkg --root="$root" --force-script-chrootless --force-depends "$@" >>"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log" >&2; fail "dpkg --root $*"; }; }
link=$root/etc/systemd/user/timers.target.wants/agent-relay-reap.timer
state=$root/var/lib/systemd/deb-systemd-user-helper-enabled
status() { dpkg --root="$root" -s "$name" 2>/dev/null | sed -n 's/^Status: //p'; }

dpkgr -i "$deb"
[ "$(status)" = "install ok installed" ] || fail "after install, status is '$(status)'"
[ "$(readlink "$link")" = /usr/lib/systemd/user/agent-relay-reap.timer ] ||
  fail "after install, $link is not a link to the timer (timer not enabled for all users)"
[ -f "$state/agent-relay-reap.timer.dsh-also" ] || fail "after install, no deb-systemd-helper state"
[ "$(stat -c %a "$root/usr/bin/$name")" = 755 ] || fail "installed binary is not mode 755"
# An administrator's `systemctl --global disable` survives an upgrade (was-enabled is false).
systemctl --root="$root" --global disable agent-relay-reap.timer >/dev/null 2>&1
[ ! -e "$link" ] || fail "systemctl --root --global disable left $link"
dpkgr -i "$deb"
if [ -L "$link" ]; then fail "reinstall re-enabled a timer the administrator disabled"; fi
systemctl --root="$root" --global enable agent-relay-reap.timer >/dev/null 2>&1
[ -L "$link" ] || fail "systemctl --root --global enable did not link the timer"
dpkgr -i "$deb"
[ -L "$link" ] || fail "reinstall dropped an enabled timer"

dpkgr -r "$name"
[ "$(status)" = "deinstall ok config-files" ] || fail "after remove, status is '$(status)'"
[ ! -e "$root/usr/bin/$name" ] || fail "after remove, the binary is still there"
# Removal keeps the administrator's choice (a dangling link) until purge, as debhelper does.
[ -L "$link" ] || fail "after remove, the enablement link is gone before purge"

dpkgr -P "$name"
[ -z "$(status)" ] || fail "after purge, status is '$(status)'"
[ ! -L "$link" ] || fail "after purge, $link is still there"
[ ! -e "$state/agent-relay-reap.timer.dsh-also" ] || fail "after purge, deb-systemd-helper state is left"
left=$(cd "$root" && find . -path ./var/lib/dpkg -prune -o ! -type d -print)
[ -z "$left" ] || fail "after purge, files are left in the root: $left"

host_state "$work/host.after"
same "host systemd/dpkg state (must be untouched)" "$work/host.before" "$work/host.after"

echo "-- Arch PKGBUILD"
bash -n packaging/arch/PKGBUILD
bash -n packaging/arch/$name.install
mkdir "$work/arch"
cp packaging/arch/PKGBUILD packaging/arch/$name.install "$work/arch/"
chown -R nobody "$work/arch"
# makepkg refuses to run as root.
(cd "$work/arch" && runuser -u nobody -- makepkg --printsrcinfo) >"$work/srcinfo" ||
  fail "makepkg --printsrcinfo"
grep -qxF "	pkgver = $version" "$work/srcinfo" || fail "PKGBUILD pkgver is not Cargo.toml's $version"
for d in systemd dbus; do
  grep -qxF "	depends = $d" "$work/srcinfo" || fail "PKGBUILD does not depend on $d"
done
grep -qE "^	optdepends = tmux: " "$work/srcinfo" || fail "PKGBUILD does not suggest tmux"
grep -qxF "	depends = tmux" "$work/srcinfo" && fail "PKGBUILD depends on tmux (a recommendation only)"
grep -qxF "	install = $name.install" "$work/srcinfo" || fail "PKGBUILD names no install file"
# package() against this tree's build outputs, as makepkg would call it after build().
mkdir -p "$work/arch/src" "$work/arch/pkg"
ln -s "$PWD" "$work/arch/src/$name-$version"
(
  cd "$work/arch"
  # shellcheck source=/dev/null
  . ./PKGBUILD
  # shellcheck disable=SC2034 # pkgdir is read by package()
  srcdir=$work/arch/src pkgdir=$work/arch/pkg
  cd "$srcdir"
  package
) || fail "PKGBUILD package() failed"
(cd "$work/arch/pkg" && find . ! -type d -printf '%M %p\n' | sort -k2) >"$work/arch.files"
sort -k2 >"$work/arch.want" <<EOF
-rwxr-xr-x ./usr/bin/$name
-rw-r--r-- ./usr/lib/systemd/user/agent-relay-reap.service
-rw-r--r-- ./usr/lib/systemd/user/agent-relay-reap.timer
-rw-r--r-- ./usr/lib/systemd/user/agent_relay.slice
-rwxr-xr-x ./usr/lib/systemd/user-generators/agent-relay-generator
-rw-r--r-- ./usr/share/bash-completion/completions/$name
-rw-r--r-- ./usr/share/doc/$name/README.md
-rw-r--r-- ./usr/share/fish/vendor_completions.d/$name.fish
-rw-r--r-- ./usr/share/licenses/$name/LICENSE-APACHE
-rw-r--r-- ./usr/share/licenses/$name/LICENSE-MIT
-rw-r--r-- ./usr/share/man/man1/$name.1.gz
-rw-r--r-- ./usr/share/zsh/site-functions/_$name
EOF
same "PKGBUILD package() file list" "$work/arch.want" "$work/arch.files"

echo "packages: .deb, .rpm and PKGBUILD checked"
