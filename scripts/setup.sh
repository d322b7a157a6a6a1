#!/usr/bin/env bash
# Installs what Nursery Monitor needs on a Debian-like machine: mosquitto and PulseAudio (if root or sudo is available)
# and a virtual environment in .venv with the package, its training extra and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)  # speech for the gate tests
ldconfig -p 2>/dev/null | grep -q libportaudio || need_apt+=(libportaudio2)
# a private sound server for the real-device tests (tests/test_pulse_device.py); ALSA's pulse plugin is how
# sounddevice reaches it (audio.device: pulse)
command -v pulseaudio >/dev/null 2>&1 || need_apt+=(pulseaudio)
command -v paplay >/dev/null 2>&1 || need_apt+=(pulseaudio-utils)
ls /usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so >/dev/null 2>&1 || need_apt+=(libasound2-plugins)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: please install ${need_apt[*]} (apt-get install ${need_apt[*]})" >&2
  else
    echo "setup: installing ${need_apt[*]} from Debian's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (torch is pinned to the CPU build)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned, so no other package can pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[train,dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
