#!/usr/bin/env bash
# Set up this project on a fresh Debian machine (root or sudo, Python 3.11), then act:
#   ./setup.sh          set up, then run the whole pipeline on the embedded demo dataset
#   ./setup.sh test     set up, then run the test suite
#   ./setup.sh env      set up only
# Idempotent: each step is skipped when what it depends on is unchanged (a warm run takes seconds).
# EFFNET_TF=tensorflow installs the GPU TensorFlow wheel instead of tensorflow-cpu (GPU hosts).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
TF_WHEEL=${EFFNET_TF:-tensorflow-cpu}
CONSTRAINTS=requirements/constraints.txt
APT_PACKAGES=(g++ munge slurmctld slurmd slurm-client libslurm-dev)
HOROVOD_BUILD=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
               HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j2)

say() { printf '==> %s\n' "$*"; }

# pip without the per-package notes about unreachable local mirrors some hosts print.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}

vpython() { "$VENV/bin/python" "$@"; }

# A Python that can make a venv and compile extensions (Horovod); Debian's needs python3-venv and python3-dev.
python_is_complete() {
  "$PYTHON" -c 'import ensurepip, os, sysconfig
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null
}

install_system_packages() {
  python_is_complete || APT_PACKAGES+=(python3-venv python3-dev)
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "system packages present"; return; fi
  say "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  say "pip install $TF_WHEEL and the pinned stack ($CONSTRAINTS)"
  local tf_spec=$TF_WHEEL
  [ "$TF_WHEEL" = tensorflow ] && tf_spec='tensorflow[and-cuda]'
  pip install -q -c "$CONSTRAINTS" setuptools wheel 'cmake<4'
  pip install -q -c "$CONSTRAINTS" "$tf_spec" -e '.[test]'
}

# Horovod and the DALI TF plugin compile against the installed TF: (re)build when they do not load.
build_horovod() {
  if vpython -c 'import horovod.tensorflow as h; assert h.gloo_built()' 2>/dev/null; then
    say "horovod loads against this TensorFlow"; return
  fi
  say "building horovod from source with gloo (2-5 min)"
  env "${HOROVOD_BUILD[@]}" "$VENV/bin/python" -m pip --disable-pip-version-check install -q \
    --no-cache-dir --no-build-isolation --force-reinstall --no-deps -c "$CONSTRAINTS" horovod 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
  pip install -q -c "$CONSTRAINTS" horovod  # its pure-Python dependencies
}

install_dali_plugin() {
  if vpython -c 'import nvidia.dali.plugin.tf' 2>/dev/null; then
    say "DALI TF plugin loads against this TensorFlow"; return
  fi
  say "building the DALI TF plugin against the installed TensorFlow"
  pip install -q --no-cache-dir --no-build-isolation --force-reinstall --no-deps \
    -c "$CONSTRAINTS" nvidia-dali-tf-plugin-cuda120
}

setup() {
  install_system_packages
  local stamp="$VENV/.setup-stamp" want
  want=$(cat setup.sh pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)-$TF_WHEEL
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
      && vpython -c 'import horovod.tensorflow, nvidia.dali.plugin.tf' 2>/dev/null; then
    say "python environment up to date ($VENV)"
    return
  fi
  rm -f "$stamp"
  install_python_packages
  build_horovod
  install_dali_plugin
  say "pip check"
  "$VENV/bin/python" -m pip check
  echo "$want" > "$stamp"
}

main() {
  local action=${1:-demo}
  case "$action" in
    demo|test|env) ;;
    *) echo "usage: $0 [demo|test|env]" >&2; exit 2 ;;
  esac
  local start=$SECONDS
  setup
  say "setup finished in $((SECONDS - start)) s"
  export PATH="$PWD/$VENV/bin:$PATH"
  case "$action" in
    demo) python -m effnet doctor && snakemake --cores all all ;;
    test) python -m pytest ;;
  esac
}

main "$@"
