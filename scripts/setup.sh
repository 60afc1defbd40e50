#!/usr/bin/env bash
# Create (or refresh) the project environment: system packages, .venv, mltool with all extras.
# Idempotent and quick when nothing changed. Usage: bash scripts/setup.sh [--test]
#   (no option)  what mltool's main job needs (scripts/quickstart.sh)
#   --test       also what the test suite needs (scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# ---- system packages (Debian/Ubuntu) ---------------------------------------------------------
# real Fashion-MNIST IDX files, and an SSH client for `mltool deploy`
APT_PACKAGES=(dataset-fashion-mnist openssh-client)
if [ "${1:-}" = "--test" ]; then
  # a real sshd for deploy tests; a real headless browser for serve's live page; a real MQTT
  # broker and client for MQTT tests
  APT_PACKAGES+=(openssh-server chromium mosquitto mosquitto-clients mender-client mender-artifact)
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    log "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "warning: no apt-get; install ${missing[*]} yourself (or pass --data DIR to mltool train)"
  fi
fi

# ---- Python environment ----------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  log "error: mltool needs Python >= 3.10 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PYTHON" --version 2>&1)"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    command -v apt-get >/dev/null && { apt-get update -qq; apt-get install -y -qq python3-venv >/dev/null; }
    "$PYTHON" -m venv .venv
  fi
fi
stamp=".venv/.mltool-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing mltool-edge[all,dev] into .venv (TensorFlow is large: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  # the project was called "mltool" before (taken on PyPI by another project): drop that install
  .venv/bin/python -m pip uninstall -q -y mltool >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  rm -f .venv/.mltool-setup-* && touch "$stamp"
else
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
fi
log "ready: $(.venv/bin/mltool --version)  (activate with: source .venv/bin/activate)"
