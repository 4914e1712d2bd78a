#!/usr/bin/env bash
# Install the appliance the way an image builder would, in an arm64 Debian 12 chroot
# (the base of Raspberry Pi OS 64-bit) run under qemu-user emulation: scripts/install.sh
# in image mode, then `appliance check --help` and the imports the daemon needs, inside.
# Slow (emulated: about 7 minutes cold, 3 with the cache on a 2-core x86 host), so not
# part of the test suite.
#
#   sudo scripts/test-arm64-install.sh          the working tree's files (tracked and new)
#   sudo scripts/test-arm64-install.sh --keep   keep the chroot afterwards (its path is printed)
#
# Needs root, the network for Debian and PyPI, and binfmt_misc; installs the Debian
# packages debootstrap, qemu-user-static and binfmt-support when missing. The base
# system (after debootstrap's second stage), the apt archives and pip's cache are kept
# in $ARM64_CACHE (default /var/cache/appliance-test/arm64), so a rerun skips them.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${ARM64_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${ARM64_CACHE:-/var/cache/appliance-test/arm64}
BASE_TARBALL=$CACHE/debian-$SUITE-arm64-base.tar.gz
# Raspberry Pi OS Lite has these beyond minbase: systemd as init, udev, CA certificates.
BASE_INCLUDE=systemd,systemd-sysv,udev,ca-certificates
HOST_PACKAGES=(debootstrap qemu-user-static binfmt-support)
BINFMT=/proc/sys/fs/binfmt_misc
SRC_IN_CHROOT=/usr/local/src/appliance
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

keep=0
case "${1:-}" in
  --keep) keep=1 ;;
  "") ;;
  -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/test-arm64-install.sh [--keep]" >&2; exit 2 ;;
esac

started=$SECONDS
step() { echo "== [$((SECONDS - started))s] $*"; }
die() { echo "test-arm64-install: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mounts need it)"

# ----------------------------------------------------------- host tools

missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# arm64 binaries run through qemu-aarch64-static, registered with the F flag (the
# kernel opens the interpreter now, so the chroot needs no copy of it).
if [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" ||
    die "cannot mount binfmt_misc on $BINFMT (a container without CAP_SYS_ADMIN or the kernel module)"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null ||
  die "qemu-aarch64 is not registered in $BINFMT (update-binfmts --enable qemu-aarch64 failed)"
grep -q '^flags: .*F' "$BINFMT/qemu-aarch64" ||
  die "qemu-aarch64 is registered without the F (fix binary) flag: the chroot could not find it"

# ----------------------------------------------------------- the chroot

work=$(mktemp -d /var/tmp/appliance-arm64.XXXXXX)
chroot_dir=$work/root
mounts=()

cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true
  done
  if [ "$keep" = 1 ]; then
    echo "kept the chroot: $chroot_dir  (enter: sudo chroot $chroot_dir)"
  elif findmnt -rn -o TARGET | grep -q "^$work"; then
    echo "test-arm64-install: something is still mounted under $work; not removing it" >&2
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT

bind() { # bind SOURCE TARGET-IN-CHROOT
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounts+=("$2")
}

in_chroot() {
  chroot "$chroot_dir" /usr/bin/env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 "$@"
}

mkdir -p "$CACHE" "$chroot_dir"
if [ -f "$BASE_TARBALL" ]; then
  step "unpacking the cached base system $BASE_TARBALL"
  tar -xzpf "$BASE_TARBALL" -C "$chroot_dir"
else
  step "debootstrap --arch=arm64 --foreign $SUITE (first stage)"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$BASE_INCLUDE" \
    "$SUITE" "$chroot_dir" "$MIRROR"
  step "debootstrap second stage, emulated"
  chroot "$chroot_dir" /debootstrap/debootstrap --second-stage
  cat >"$chroot_dir/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  rm -rf "$chroot_dir"/var/cache/apt/archives/*.deb "$chroot_dir"/var/lib/apt/lists/*
  step "caching the base system in $BASE_TARBALL"
  tar -czpf "$BASE_TARBALL.partial" -C "$chroot_dir" .
  mv "$BASE_TARBALL.partial" "$BASE_TARBALL"
fi

[ "$(in_chroot uname -m)" = aarch64 ] || die "the chroot does not run as aarch64"

# As an image builder's chroot: no services start from package scripts, the host's DNS.
printf '#!/bin/sh\nexit 101\n' >"$chroot_dir/usr/sbin/policy-rc.d"
chmod 0755 "$chroot_dir/usr/sbin/policy-rc.d"
cp -L /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
# Behind a TLS-inspecting proxy pip needs the CAs this host added locally; the chroot
# is thrown away, so it may trust them too.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  step "trusting this host's local CAs in the chroot (/usr/local/share/ca-certificates)"
  cp /usr/local/share/ca-certificates/*.crt "$chroot_dir/usr/local/share/ca-certificates/"
  in_chroot update-ca-certificates >/dev/null
fi
mount -t proc proc "$chroot_dir/proc" && mounts+=("$chroot_dir/proc")
mount -t sysfs sysfs "$chroot_dir/sys" && mounts+=("$chroot_dir/sys")
bind /dev "$chroot_dir/dev"
mkdir -p "$CACHE/apt-archives/partial" "$CACHE/pip"
bind "$CACHE/apt-archives" "$chroot_dir/var/cache/apt/archives"
bind "$CACHE/pip" "$chroot_dir/root/.cache/pip"

step "copying the project to $SRC_IN_CHROOT"
mkdir -p "$chroot_dir$SRC_IN_CHROOT"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$SRC" ls-files -z -co --exclude-standard |
    (cd "$SRC" && tar --null -T - --ignore-failed-read -cf -) |
    tar -xf - -C "$chroot_dir$SRC_IN_CHROOT"
else
  tar -C "$SRC" --exclude=./.venv --exclude=./.git -cf - . | tar -xf - -C "$chroot_dir$SRC_IN_CHROOT"
fi

# ----------------------------------------------------------- the install

step "scripts/install.sh --image, emulated"
in_chroot bash "$SRC_IN_CHROOT/scripts/install.sh" --image | tee "$work/install.log"
grep -q "image mode: enabled, not started" "$work/install.log" || die "install.sh did not run in image mode"
if grep -Eq '^\+ systemctl (daemon-reload|restart|start)' "$work/install.log"; then
  die "image mode reloaded or started systemd"
fi

step "scripts/install.sh again (an image rebuilt or updated): nothing added twice"
in_chroot bash "$SRC_IN_CHROOT/scripts/install.sh" --image | tee "$work/again.log"
grep -q "apt packages already installed" "$work/again.log" || die "the second run went to apt again"
grep -q "group gpio exists" "$work/again.log" || die "the second run added the gpio group again"
grep -q "keeping existing /etc/appliance/config.yaml" "$work/again.log" ||
  die "the second run did not keep the config"

# ----------------------------------------------------------- the checks

step "checks"
venv=/opt/appliance/venv
in_chroot "$venv/bin/appliance" check --help >/dev/null || die "appliance check --help failed"
echo "ok: appliance check --help"
in_chroot "$venv/bin/python" -c 'import appliance, gpiozero, lgpio, pyaudio, numpy, soxr, spidev' ||
  die "the daemon's imports fail"
echo "ok: import appliance, gpiozero, lgpio, pyaudio, numpy, soxr, spidev"
in_chroot "$venv/bin/python" -c 'from gpiozero.pins.lgpio import LGPIOFactory' ||
  die "gpiozero's lgpio pin factory does not import"
echo "ok: gpiozero's lgpio pin factory imports"
in_chroot getent group gpio >/dev/null || die "no gpio group"
echo "ok: group gpio"
[ -f "$chroot_dir/etc/udev/rules.d/90-appliance-gpio.rules" ] || die "no udev rules for gpio"
echo "ok: udev rules for /dev/gpiochip* and /dev/gpiomem*"
[ -L "$chroot_dir/etc/systemd/system/multi-user.target.wants/appliance.service" ] ||
  die "appliance.service is not enabled"
echo "ok: appliance.service enabled"
in_chroot systemd-analyze verify /etc/systemd/system/appliance.service ||
  die "systemd-analyze verify fails on the installed unit"
echo "ok: systemd-analyze verify"

step "PASS: arm64 Debian $SUITE image install"
