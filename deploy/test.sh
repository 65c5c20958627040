#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (Debian and Python
# packages), starts the services (PostgreSQL, MariaDB, the dev Slurm clusters), then
# runs ruff, mypy, import-linter and pytest. Usage: bash deploy/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v psql >/dev/null || need_apt+=(postgresql)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v curl >/dev/null || need_apt+=(curl)
command -v wrk >/dev/null || need_apt+=(wrk)  # benchmarks/submit_load.py
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

log "services"
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

log "python environment"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,kernels,clients]'
export PATH="$ROOT/.venv/bin:$PATH"

if [ -x deploy/slurm/devcluster ]; then
  # alpha and beta (Debian's Slurm 22.05) and gamma (Slurm 25.11 from the vendored source
  # tarball beside the checkout: built once into /opt/hpc-broker-cache, about 4 min on 2
  # cores, then cached by the tarball's sha256), with pyslurm 25.11 built against it
  # (about 3.5 min once, cached) and installed into .venv. Without the tarball: 22.05 only.
  TARBALL=${HPC_BROKER_SLURM_TARBALL:-$ROOT/../shared/vendor/slurm-25.11.7.tar.xz}
  if [ -f "$TARBALL" ]; then
    export HPC_BROKER_SLURM_TARBALL=$TARBALL
    log "dev Slurm clusters: alpha, beta (22.05) and gamma (25.11)"
    start=$SECONDS
    BROKER_DEV_CLUSTERS_FILE=$(deploy/slurm/devcluster up --three | tail -n1)
    log "pyslurm for gamma"
    .venv/bin/pip install -q --disable-pip-version-check \
      "$(deploy/slurm/devcluster pyslurm-wheel "$ROOT/.venv/bin/python" | tail -n1)"
    echo "gamma ready (build, or cache hit, included) in $((SECONDS - start)) s"
    export BROKER_TEST_GAMMA=1
  else
    log "dev Slurm clusters: alpha, beta (no $TARBALL: gamma's tests skip)"
    BROKER_DEV_CLUSTERS_FILE=$(deploy/slurm/devcluster up --two | tail -n1)
  fi
  export BROKER_DEV_CLUSTERS_FILE
fi

log "ruff"
ruff check .
log "mypy"
mypy
log "import-linter"
lint-imports
log "pytest"
# Two pytest-xdist workers (in one process the suite spent half its time waiting on Slurm
# jobs, servers and subprocesses, one core idle): each file's tests on one worker, in file
# order, the live Slurm tests on one worker one after another (tests/conftest.py names the
# groups). BROKER_TEST_WORKERS=0 runs them all in this process.
pytest -p no:cacheprovider -n "${BROKER_TEST_WORKERS:-2}" --dist loadgroup "$@"
