#!/usr/bin/env bash
# Set up this project (Python 3.10-3.12; no root needed when g++ and the Python headers are present), then act:
#   ./setup.sh          set up, then run the whole pipeline on the embedded demo dataset
#   ./setup.sh test     set up (plus, as root, Debian's SLURM and munge for the tests, and the peer comparisons'
#                       data: scikit-learn's digits and Debian's Fashion-MNIST), then run the test suite
#   ./setup.sh env      set up only
#   ./setup.sh system [ACTION]   only check (or, as root, install) the system packages ACTION needs
# Idempotent: each step is skipped when what it depends on is unchanged (a warm run takes seconds).
# EFFNET_TF=tensorflow installs the GPU TensorFlow wheel instead of tensorflow-cpu (GPU hosts).
# Horovod is built with both controllers, gloo and MPI (an MPI-built Horovod is what srun --mpi=pmix|pmi2 starts;
# needs an MPI's mpicxx: Debian's Open MPI, or a module's); EFFNET_HOROVOD=gloo builds gloo only (no MPI needed,
# cluster.mpi: none), EFFNET_HOROVOD=gpu adds NCCL allreduce (needs CUDA's nvcc and NCCL headers: the
# Dockerfile's CUDA devel image).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
TF_WHEEL=${EFFNET_TF:-tensorflow-cpu}
CONSTRAINTS=requirements/constraints.txt
SLURM_PACKAGES=(munge slurmctld slurmd slurm-client libslurm-dev)  # the tests' own SLURM, on localhost
BENCH_PACKAGES=(dataset-fashion-mnist)  # the peer comparisons' Fashion-MNIST (benchmarks/peers), smoke-tested
# A newer SLURM the SLURM tests run on as well (sites run 23.11 to 25.x; bookworm has 22.05): Debian trixie's
# source package, built once into a cache outside the clone, which a fresh clone on this machine reuses.
SLURM_NEW=24.11.5
SLURM_NEW_PREFIX=${EFFNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/effnet}/slurm-$SLURM_NEW
# what it builds with, and the MariaDB its accounting test runs slurmdbd on
SLURM_BUILD_PACKAGES=(libmunge-dev libpmix-dev libhwloc-dev libmariadb-dev libjson-c-dev lz4 make mariadb-server)
HOROVOD=${EFFNET_HOROVOD:-cpu}
HOROVOD_BUILD=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
               MAKEFLAGS=-j2)
case "$HOROVOD" in
  gloo) HOROVOD_BUILD+=(HOROVOD_WITHOUT_MPI=1); HOROVOD_LOADS='h.gloo_built()' ;;
  cpu) HOROVOD_BUILD+=(HOROVOD_WITH_MPI=1); HOROVOD_LOADS='h.gloo_built() and h.mpi_built()' ;;
  gpu) HOROVOD_BUILD+=(HOROVOD_WITH_MPI=1 HOROVOD_GPU_OPERATIONS=NCCL)
       HOROVOD_LOADS='h.gloo_built() and h.mpi_built() and h.nccl_built()' ;;
  *) echo "setup.sh: EFFNET_HOROVOD=$HOROVOD: use cpu, gloo or gpu" >&2; exit 2 ;;
esac

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$1" >&2; shift; [ $# -eq 0 ] || printf '  %s\n' "$@" >&2; exit 1; }

# pip without the per-package notes about unreachable local mirrors some hosts print.
pip() {
  "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
}

vpython() { "$VENV/bin/python" "$@"; }

# TensorFlow 2.18 supports Python 3.10-3.12: say so before anything is installed.
check_python() {
  local path version
  path=$(command -v "$PYTHON") || die "no Python interpreter '$PYTHON' on PATH." \
    "Set PYTHON to a Python 3.10, 3.11 or 3.12, e.g. PYTHON=python3.11 ./setup.sh"
  version=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || version=unknown
  case "$version" in
    3.10.*|3.11.*|3.12.*) PY_MINOR=${version%.*} ;;
    *) die "$path is Python $version; TensorFlow 2.18 needs Python 3.10, 3.11 or 3.12." \
           "Choose one with PYTHON, e.g. PYTHON=python3.11 ./setup.sh" ;;
  esac
}

# A Python that can make a venv and compile extensions (Horovod); Debian's needs python3.X-venv and -dev.
python_is_complete() {
  "$PYTHON" -c 'import ensurepip, os, sysconfig
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null
}

can_be_root() { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }

apt_install() {
  say "apt-get install $*"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What building needs: a working g++ (Debian's or a module system's), a complete Python and, unless
# EFFNET_HOROVOD=gloo, an MPI. Root only to install.
install_build_packages() {
  local missing=()
  g++ --version >/dev/null 2>&1 || missing+=(g++)
  python_is_complete || missing+=("python$PY_MINOR-venv" "python$PY_MINOR-dev")
  [ "$HOROVOD" = gloo ] || command -v mpicxx >/dev/null || missing+=(libopenmpi-dev openmpi-bin)
  if [ ${#missing[@]} -eq 0 ]; then say "build tools present (g++, Python $PY_MINOR with headers, MPI)"; return; fi
  if command -v apt-get >/dev/null && can_be_root; then apt_install "${missing[@]}"; return; fi
  die "missing ${missing[*]}, and no root or passwordless sudo to install them." \
      "An admin can run: apt-get install ${missing[*]}" \
      "or load compiler and MPI modules (g++, mpicxx on PATH) / pick a complete Python (PYTHON=...) and rerun," \
      "or build Horovod without MPI (EFFNET_HOROVOD=gloo ./setup.sh; then only cluster.mpi: none works)."
}

# The SLURM tests start Debian's daemons at fixed paths with their own SLURM_CONF. Never install Debian's
# SLURM where a site's sbatch is on PATH: it would shadow the site's commands.
install_test_slurm() {
  local sbatch missing=() pkg
  sbatch=$(command -v sbatch || true)
  if [ -n "$sbatch" ] && ! dpkg -S "$(readlink -f "$sbatch")" >/dev/null 2>&1; then
    say "site SLURM found ($sbatch): left alone; the SLURM tests run only if the test SLURM" \
        "(Debian's /usr/sbin/slurmctld, /usr/sbin/slurmd, /usr/bin/sbatch) is present"
    return
  fi
  command -v dpkg-query >/dev/null || { say "not a Debian host: no test SLURM, the SLURM tests will be skipped"; return; }
  for pkg in "${SLURM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "test SLURM present"; return; fi
  if ! can_be_root; then
    say "note: no root or passwordless sudo, so ${missing[*]} not installed: the SLURM tests will be skipped"
    return
  fi
  apt_install "${missing[@]}"
}

# Debian trixie's SLURM source (the upstream tarball of its slurm-wlm package, checked against the Sources index:
# apt exits non-zero where the mirror lacks the Debian patch files, so its status proves nothing), built into
# SLURM_NEW_PREFIX. Only `./setup.sh test` builds it; ./setup.sh for users never does.
build_test_slurm_new() {
  if ! command -v dpkg-query >/dev/null || ! can_be_root; then
    say "note: SLURM $SLURM_NEW not built (needs Debian's apt and root): its tests will fail, naming it"; return
  fi
  local missing=() pkg work apt tarball want got start=$SECONDS
  for pkg in "${SLURM_BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if [ -f "$SLURM_NEW_PREFIX/.built" ]; then say "SLURM $SLURM_NEW present ($SLURM_NEW_PREFIX)"; return; fi
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$work/sources.list"
  apt=(apt-get -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
  say "building SLURM $SLURM_NEW from Debian trixie's source into $SLURM_NEW_PREFIX (about 4 min)"
  "${apt[@]}" update >"$work/apt.log" 2>&1 || die "apt-get update with trixie's sources failed: see $work/apt.log"
  tarball=slurm-wlm_$SLURM_NEW.orig.tar.gz
  (cd "$work/src" && "${apt[@]}" source --download-only "slurm-wlm" >>"$work/apt.log" 2>&1 || true)
  want=$(lz4cat "$work"/lists/*_Sources.lz4 \
         | awk -v f="$tarball" '/^Checksums-Sha256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == f && !w {w = $1} END {print w}')
  got=$(sha256sum "$work/src/$tarball" 2>/dev/null | cut -d' ' -f1)
  [ -n "$want" ] && [ "$want" = "$got" ] || die "$tarball: sha256 ${got:-none} is not trixie's ${want:-unknown} (see $work/apt.log)"
  tar -xzf "$work/src/$tarball" -C "$work/src"
  (cd "$work"/src/slurm-slurm-* \
    && ./configure --prefix="$SLURM_NEW_PREFIX" --sysconfdir="$SLURM_NEW_PREFIX/etc" --with-munge=/usr \
         --with-pmix="/usr/lib/$(gcc -print-multiarch)/pmix2" --with-hwloc=/usr --with-mysql_config=/usr/bin \
    && make -j2 && make install) >"$work/build.log" 2>&1 \
    || die "SLURM $SLURM_NEW did not build: see $work/build.log" "$(tail -5 "$work/build.log")"
  touch "$SLURM_NEW_PREFIX/.built"
  rm -rf "$work"
  say "SLURM $SLURM_NEW built in $((SECONDS - start)) s"
}

# The peer comparisons' data, which their smoke test reads: Debian's Fashion-MNIST (root) and, below, the bench
# extra's scikit-learn (its digits).
install_bench_packages() {
  local missing=() pkg
  command -v dpkg-query >/dev/null || { say "not a Debian host: no Fashion-MNIST, the peer smoke test will fail"; return; }
  for pkg in "${BENCH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "benchmark data present"; return; fi
  if ! can_be_root; then say "note: no root or passwordless sudo, so ${missing[*]} not installed"; return; fi
  apt_install "${missing[@]}"
}

install_bench_extra() {
  if vpython -c 'import sklearn' 2>/dev/null; then return; fi
  say "pip install the bench extra (scikit-learn, for the peer comparisons)"
  pip install -q -c "$CONSTRAINTS" -e '.[test,bench]'
  "$VENV/bin/python" -m pip check
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
  if vpython -c "import horovod.tensorflow as h; assert $HOROVOD_LOADS" 2>/dev/null; then
    say "horovod loads against this TensorFlow"; return
  fi
  say "building horovod from source ($HOROVOD: ${HOROVOD_BUILD[*]}; 2-5 min)"
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

setup_python() {
  local stamp="$VENV/.setup-stamp" want
  want=$(cat setup.sh pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)-$TF_WHEEL-$HOROVOD
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
  local action=${1:-demo} system_only=""
  if [ "$action" = system ]; then system_only=1; action=${2:-demo}; fi
  case "$action" in
    demo|test|env) ;;
    *) echo "usage: $0 [system] [demo|test|env]" >&2; exit 2 ;;
  esac
  check_python
  local start=$SECONDS
  install_build_packages
  if [ "$action" = test ]; then install_test_slurm; build_test_slurm_new; install_bench_packages; fi
  if [ -n "$system_only" ]; then return; fi
  setup_python
  if [ "$action" = test ]; then install_bench_extra; fi
  say "setup finished in $((SECONDS - start)) s"
  export PATH="$PWD/$VENV/bin:$PATH"
  case "$action" in
    demo) python -m effnet doctor && snakemake --cores all all && demo_summary ;;
    test) python -m pytest ;;
  esac
}

# Where the demo's results are, with its validation top-1.
demo_summary() {
  local run; run=$(python -c 'import yaml; print(yaml.safe_load(open("config/config.yaml"))["run_dir"])')
  python - "$run" <<'PY'
import json, sys
run = sys.argv[1]
top1 = json.load(open(f"{run}/evaluate/metrics.json"))["top1"]
print(f"demo: validation top-1 {top1:.1%}; report {run}/report/report.html (tables and plots), "
      f"predictions {run}/infer/predictions.csv, metrics {run}/evaluate/metrics.json, servable model {run}/export, "
      f"benchmarks {run}/benchmark, logs {run}/logs")
PY
}

main "$@"
