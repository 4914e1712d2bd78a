#!/usr/bin/env bash
# Install the appliance as a systemd service on Raspberry Pi OS Bookworm (64-bit) or plain
# Debian 12 (arm64).
#
#   sudo scripts/install.sh --api-key-file key.txt      install (or update), enable, start
#   sudo scripts/install.sh --api-key-stdin < key.txt   the key from stdin (never from argv)
#   sudo scripts/install.sh                             update; keep the stored key
#   sudo scripts/install.sh --uninstall [--purge]       remove (--purge: config, key, recordings)
#
#   --root DIR     install into DIR (an image or a scratch tree) instead of /;
#                  no apt, no systemctl start, no key encryption (do that on the device)
#   --image        build an image from inside it (pi-gen, sdm, a chroot): apt, venv, unit,
#                  enabled but never started, no daemon-reload, no key encryption; the
#                  default when systemd is not running (no /run/systemd/system)
#   --no-image     install as on a running device even so
#   --dry-run      print what would be done, change nothing
#   --no-packages  skip apt-get;  --no-venv  skip the virtual environment;  --no-start  do not start
#
# lgpio (gpiozero's pin factory on a Pi 5) comes from apt where the archive has
# python3-lgpio (Raspberry Pi OS), else from PyPI (an aarch64 wheel). The static
# group gpio and udev rules giving it /dev/gpiochip* and /dev/gpiomem* are added
# where missing (Raspberry Pi OS has both).
#
# Idempotent: running it again updates the package and the unit, never
# overwrites /etc/appliance/config.yaml, and keeps the stored key unless a new
# one is given. Recordings in /var/lib/appliance are never removed without --purge.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
UNIT_NAME=appliance.service
CREDENTIAL_NAME=assemblyai-api-key
# python3-spidev: the APA102 LED rings of mic HATs (led.kind: apa102), a small C extension
# that Debian and Raspberry Pi OS both build, so the Pi needs no compiler for it.
APT_PACKAGES=(python3 python3-venv python3-pip python3-pyaudio python3-systemd
  python3-gpiozero python3-numpy python3-yaml python3-spidev libportaudio2 alsa-utils)
# Only in the Raspberry Pi archive; elsewhere PyPI's wheel (aarch64, no compiler needed).
LGPIO_APT=python3-lgpio
LGPIO_PYPI=lgpio
GPIO_GROUP=gpio
UDEV_RULES_NAME=90-appliance-gpio.rules

root=/
dry_run=0
uninstall=0
purge=0
packages=1
venv=1
start=1
key_file=""
key_stdin=0
image=auto

usage() {
  sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift ;;
    --root=*) root=${1#--root=} ;;
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --no-packages) packages=0 ;;
    --no-venv) venv=0 ;;
    --no-start) start=0 ;;
    --image) image=1 ;;
    --no-image) image=0 ;;
    --api-key-file) key_file=${2:?--api-key-file needs a file}; shift ;;
    --api-key-file=*) key_file=${1#--api-key-file=} ;;
    --api-key-stdin) key_stdin=1 ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown option: $1" >&2; usage 2 ;;
  esac
  shift
done

root=${root%/}
on_host=1
[ -n "$root" ] && on_host=0 # a --root other than / is an image, not this machine
# Image mode: this is / of an image being built (a chroot, no systemd running), so
# nothing is started or reloaded. sd_booted()'s test: is-system-running would also
# fail on a running but degraded device.
if [ "$on_host" = 0 ]; then
  image=0
elif [ "$image" = auto ]; then
  image=1
  [ -d /run/systemd/system ] && image=0
fi
running=0 # a booted system whose systemd and udev are told of changes
[ "$on_host" = 1 ] && [ "$image" = 0 ] && running=1

OPT_DIR=$root/opt/appliance
VENV=$OPT_DIR/venv
UNIT_PATH=$root/etc/systemd/system/$UNIT_NAME
CONFIG_DIR=$root/etc/appliance
CONFIG_PATH=$CONFIG_DIR/config.yaml
CREDSTORE=$root/etc/credstore.encrypted
CREDENTIAL_PATH=$CREDSTORE/$CREDENTIAL_NAME
STATE_DIR=$root/var/lib/appliance
UDEV_RULES_PATH=$root/etc/udev/rules.d/$UDEV_RULES_NAME
lgpio_from=unknown # apt | pypi | unknown (--no-packages: whatever python3 can import)

# Print a command, then run it unless this is a dry run.
run() {
  echo "+ $*"
  [ "$dry_run" = 1 ] || "$@"
}

note() { echo "install.sh: $*"; }

systemctl_cmd() {
  if [ "$on_host" = 1 ]; then
    run systemctl "$@"
  else
    run systemctl --root="$root" "$@"
  fi
}

need_root() {
  if [ "$dry_run" = 0 ] && [ "$on_host" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or use --dry-run / --root DIR"
  fi
}

# ---------------------------------------------------------------- uninstall

do_uninstall() {
  need_root
  if [ -e "$UNIT_PATH" ] || [ "$dry_run" = 1 ]; then
    if [ "$running" = 1 ]; then
      systemctl_cmd disable --now "$UNIT_NAME" || true
    else
      systemctl_cmd disable "$UNIT_NAME" || true
    fi
    run rm -f "$UNIT_PATH"
    if [ "$running" = 1 ]; then
      systemctl_cmd daemon-reload
    fi
  fi
  # The gpio group stays: other software on the device may use it.
  run rm -f "$UDEV_RULES_PATH"
  run rm -rf "$OPT_DIR"
  if [ "$purge" = 1 ]; then
    run rm -rf "$CONFIG_DIR" "$CREDENTIAL_PATH" "$STATE_DIR" "$root/var/lib/private/appliance"
    note "purged configuration, API key and recordings"
  else
    note "kept $CONFIG_PATH, the stored API key and recordings in $STATE_DIR (--purge removes them)"
  fi
}

# ------------------------------------------------------------------ install

deb_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# True when the configured archives offer the package (after apt-get update).
apt_has_candidate() {
  apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}

install_packages() {
  if [ "$packages" = 0 ] || [ "$on_host" = 0 ]; then
    note "skipping apt packages"
    return
  fi
  local missing=() wanted=() p
  for p in "${APT_PACKAGES[@]}"; do
    deb_installed "$p" || missing+=("$p")
  done
  lgpio_from=apt
  if ! deb_installed "$LGPIO_APT"; then
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import lgpio' >/dev/null 2>&1; then
      lgpio_from=pypi # an earlier run found no python3-lgpio; pip keeps the wheel current
    else
      missing+=("$LGPIO_APT")
    fi
  fi
  if [ "${#missing[@]}" -eq 0 ]; then
    note "apt packages already installed"
    return
  fi
  run apt-get update -qq
  for p in "${missing[@]}"; do
    if [ "$p" = "$LGPIO_APT" ] && ! apt_has_candidate "$p"; then
      lgpio_from=pypi
      note "$LGPIO_APT is not in this system's archives (only Raspberry Pi OS has it): lgpio comes from PyPI"
      continue
    fi
    wanted+=("$p")
  done
  if [ "${#wanted[@]}" -gt 0 ]; then
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}"
  fi
}

# The static group the unit's SupplementaryGroups= names; Raspberry Pi OS has it,
# Debian does not, and systemd refuses to start a unit whose group is missing.
ensure_gpio_group() {
  if [ "$on_host" = 1 ]; then
    if getent group "$GPIO_GROUP" >/dev/null; then
      note "group $GPIO_GROUP exists"
      return
    fi
    run groupadd --system "$GPIO_GROUP"
    return
  fi
  if [ ! -f "$root/etc/group" ]; then
    note "no $root/etc/group: leaving the group $GPIO_GROUP to the image"
    return
  fi
  if grep -q "^$GPIO_GROUP:" "$root/etc/group"; then
    note "group $GPIO_GROUP exists in $root"
    return
  fi
  run groupadd --system --prefix "$root" "$GPIO_GROUP"
}

# True when a rules file other than ours gives group gpio both the GPIO character
# devices and gpiomem (Raspberry Pi OS: 99-com.rules from raspberrypi-sys-mods).
gpio_rules_present() {
  local files=() f
  for f in "$root"/etc/udev/rules.d/*.rules "$root"/usr/lib/udev/rules.d/*.rules \
    "$root"/lib/udev/rules.d/*.rules; do
    [ -f "$f" ] && [ "${f##*/}" != "$UDEV_RULES_NAME" ] && files+=("$f")
  done
  [ "${#files[@]}" -gt 0 ] || return 1
  grep -Eqs '^[^#]*(SUBSYSTEM=="gpio"|gpiochip)[^#]*GROUP="gpio"' "${files[@]}" &&
    grep -Eqs '^[^#]*gpiomem[^#]*GROUP="gpio"' "${files[@]}"
}

install_udev_rules() {
  if [ ! -e "$UDEV_RULES_PATH" ] && gpio_rules_present; then
    note "udev rules already give group $GPIO_GROUP the GPIO devices"
    return
  fi
  run install -D -m 0644 "$SRC/systemd/$UDEV_RULES_NAME" "$UDEV_RULES_PATH"
  if [ "$running" = 1 ] && command -v udevadm >/dev/null; then
    # Re-own the devices present now; a container without udevd just skips it.
    { run udevadm control --reload-rules &&
      run udevadm trigger --subsystem-match=gpio --subsystem-match=bcm2835-gpiomem \
        --subsystem-match=rpi-gpiomem; } || note "udev not reloaded: the rules apply from the next boot"
  fi
}

# lgpio from PyPI when apt could not provide it (or apt was skipped and Python cannot import it).
lgpio_needs_pip() {
  case "$lgpio_from" in
    apt) return 1 ;;
    pypi) return 0 ;;
  esac
  local python=python3
  [ -x "$VENV/bin/python" ] && python=$VENV/bin/python
  ! "$python" -c 'import lgpio' >/dev/null 2>&1
}

install_venv() {
  if [ "$venv" = 0 ]; then
    note "skipping the virtual environment"
    return
  fi
  # System site packages: PyAudio, systemd-python, lgpio and numpy come from
  # Debian builds (no compiler needed on the Pi); pip adds what is newer.
  if [ ! -x "$VENV/bin/python" ]; then
    run python3 -m venv --system-site-packages "$VENV"
  fi
  # With the mqtt extra (aiomqtt, pure Python): MQTT stays off until mqtt.enabled.
  local requirements=("${SRC}[mqtt]")
  lgpio_needs_pip && requirements+=("$LGPIO_PYPI")
  run "$VENV/bin/python" -m pip install --quiet --upgrade "${requirements[@]}"
  run install -m 0644 "$SRC/README.md" "$OPT_DIR/README.md"
}

install_unit() {
  run install -D -m 0644 "$SRC/systemd/$UNIT_NAME" "$UNIT_PATH"
}

install_config() {
  if [ -e "$CONFIG_PATH" ]; then
    note "keeping existing $CONFIG_PATH"
    return
  fi
  run install -d -m 0755 "$CONFIG_DIR"
  run install -m 0644 "$SRC/config/appliance.yaml" "$CONFIG_PATH"
}

# The key goes from a file or stdin straight into systemd-creds: never argv,
# never a temporary file, never the environment.
install_credential() {
  if [ -n "$key_file" ] && [ "$key_stdin" = 1 ]; then
    die "give the key either with --api-key-file or --api-key-stdin, not both"
  fi
  if [ -z "$key_file" ] && [ "$key_stdin" = 0 ]; then
    if [ -e "$CREDENTIAL_PATH" ]; then
      note "keeping the stored API key ($CREDENTIAL_PATH)"
    elif [ "$on_host" = 0 ] || [ "$image" = 1 ]; then
      # A credential is bound to one device's host key or TPM: never to an image.
      note "no API key in the image: on each device run install.sh --api-key-file FILE" \
        "(or point auth.token_broker at your token broker and drop LoadCredentialEncrypted=)"
    else
      note "no API key stored yet: run again with --api-key-file FILE or --api-key-stdin" \
        "(or point auth.token_broker at your token broker and drop LoadCredentialEncrypted=)"
    fi
    return
  fi
  if [ -n "$key_file" ] && [ ! -r "$key_file" ]; then
    die "cannot read $key_file"
  fi
  if [ "$on_host" = 0 ] || [ "$image" = 1 ]; then
    note "not encrypting the API key into ${root:-this image}: credentials are bound to the" \
      "device (its host key or TPM); run install.sh --api-key-file on the device itself"
    return
  fi
  run install -d -m 0700 "$CREDSTORE"
  local source_name=${key_file:-stdin}
  echo "+ systemd-creds encrypt --name=$CREDENTIAL_NAME - $CREDENTIAL_PATH < $source_name"
  if [ "$dry_run" = 1 ]; then
    return
  fi
  # Strip a trailing newline so "echo KEY > file" works as expected.
  if [ -n "$key_file" ]; then
    tr -d '\r\n' <"$key_file"
  else
    tr -d '\r\n'
  fi | systemd-creds encrypt --name="$CREDENTIAL_NAME" - "$CREDENTIAL_PATH"
  chmod 0600 "$CREDENTIAL_PATH"
}

enable_and_start() {
  if [ "$on_host" = 0 ]; then
    systemctl_cmd enable "$UNIT_NAME"
    return
  fi
  if [ "$image" = 1 ]; then
    # No systemd runs here, so systemctl works offline: it links the unit into
    # multi-user.target.wants, and it starts on the device's first boot.
    systemctl_cmd enable "$UNIT_NAME"
    note "image mode: enabled, not started"
    return
  fi
  systemctl_cmd daemon-reload
  if [ "$start" = 1 ]; then
    systemctl_cmd enable "$UNIT_NAME"
    systemctl_cmd restart "$UNIT_NAME"
    note "started; follow it with: journalctl -u $UNIT_NAME -f   (preflight: appliance check)"
  else
    systemctl_cmd enable "$UNIT_NAME"
  fi
}

do_install() {
  need_root
  [ -f "$SRC/systemd/$UNIT_NAME" ] || die "$SRC does not look like the appliance source tree"
  install_packages
  ensure_gpio_group
  install_udev_rules
  install_venv
  install_unit
  install_config
  install_credential
  enable_and_start
  note "done"
}

if [ "$uninstall" = 1 ]; then
  do_uninstall
else
  do_install
fi
