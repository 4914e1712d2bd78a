#!/usr/bin/env bash
# Install what the appliance needs on a Debian machine, idempotently:
# Debian packages (only the missing ones), a virtual environment in .venv,
# and the package itself in editable mode.
#
#   scripts/bootstrap.sh          the daemon's runtime
#   scripts/bootstrap.sh --dev    plus the dev, bench, mqtt, broker and hats extras: the emulator
#                                 (the demo), pytest, the benchmark's comparison (the assemblyai
#                                 SDK) and the token broker's server (uvicorn)
#   scripts/bootstrap.sh --test   plus the Debian tools only the tests use (Chromium,
#                                 systemd-analyze, shellcheck, sox, espeak-ng, and
#                                 PipeWire for its test stacks)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
test_tools=0
case "${1:-}" in
  --dev) dev=1 ;;
  --test) dev=1; test_tools=1 ;;
  "") ;;
  *) echo "usage: scripts/bootstrap.sh [--dev|--test]" >&2; exit 2 ;;
esac

# Build headers for PyAudio and systemd-python, plus the ALSA/PulseAudio
# stack that the audio tests and the demo run through.
packages=(python3-venv portaudio19-dev libsystemd-dev pkg-config gcc
          libasound2-plugins pulseaudio pulseaudio-utils alsa-utils)
if [ "$test_tools" = 1 ]; then
  packages+=(sox espeak-ng shellcheck systemd chromium chromium-driver)
  # PipeWire 0.3.65 as on the Raspberry Pi OS desktop; these install beside pulseaudio.
  packages+=(pipewire pipewire-bin pipewire-pulse wireplumber)
  # A real MQTT broker for the MQTT tests (tests/mqtt), and its command-line clients.
  packages+=(mosquitto mosquitto-clients openssl)
fi
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PipeWire's ALSA plugin for the pipewire-alsa test stack. Debian's pipewire-alsa
# conflicts with pulseaudio (it takes over ALSA's default device), so it is
# unpacked beside the system instead; tests/fixtures/pulse.py points ALSA at it.
pw_alsa=/usr/local/lib/appliance-test/pipewire-alsa
if [ "$test_tools" = 1 ] && ! compgen -G "$pw_alsa/usr/lib/*/alsa-lib/libasound_module_pcm_pipewire.so" >/dev/null; then
  echo "bootstrap: unpacking pipewire-alsa into $pw_alsa"
  deb_dir=$(mktemp -d)
  chmod 755 "$deb_dir"
  version=$(dpkg-query -W -f='${Version}' pipewire)
  fetch() { (cd "$deb_dir" && apt-get download -qq "pipewire-alsa=$version"); }
  fetch || { "${sudo_cmd[@]}" apt-get update -qq && fetch; }  # stale package lists
  "${sudo_cmd[@]}" mkdir -p "$pw_alsa"
  "${sudo_cmd[@]}" dpkg-deb -x "$deb_dir"/pipewire-alsa_*.deb "$pw_alsa"
  rm -rf "$deb_dir"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$python" -m venv .venv
fi

extras=""
[ "$dev" = 1 ] && extras="[dev,bench,mqtt,broker,hats]"
stamp=".venv/.installed${extras}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing appliance${extras} into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".${extras}"
  touch "$stamp"
fi
