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
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,kernels]'
export PATH="$ROOT/.venv/bin:$PATH"

if [ -x deploy/slurm/devcluster ]; then
  log "dev Slurm clusters"
  BROKER_DEV_CLUSTERS_FILE=$(deploy/slurm/devcluster up --two | tail -n1)
  export BROKER_DEV_CLUSTERS_FILE
fi

log "ruff"
ruff check .
log "mypy"
mypy
log "import-linter"
lint-imports
log "pytest"
pytest -p no:cacheprovider "$@"
