#!/usr/bin/env bash
# Installs mmnet's build and test dependencies from Debian, only when something is missing (idempotent).
set -euo pipefail
pkgs=(cmake make g++ pkg-config xtensor-dev libxsimd-dev xtl-dev doctest-dev libhdf5-dev libthrust-dev libcli11-dev
      libnifti2-dev zlib1g-dev nlohmann-json3-dev
      python3-torch python3-h5py python3-numpy python3-scipy python3-nibabel)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[mmnet] installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[mmnet] dependencies present"
fi
