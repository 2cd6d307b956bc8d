#!/usr/bin/env bash
# Regenerate the sematlas compendium.
#
#   ./run_all.sh [PROFILE] [--only STAGE] [--from STAGE] [--force]
#       PROFILE: ci | quick (default) | cpu-full | gpu
#       then renders the manuscript (manuscript/_output/index.html) from the profile's results
#       and prints the headline results with their files and the wall time of each stage.
#   ./run_all.sh test
#       lint, lib unit tests, every stage and the manuscript on the ci profile, then nbval.
#
# Both create .venv when missing and install the pinned requirements into it.
# Point at an offline copy of the Neurosynth v7 files with SEMATLAS_DATA_MIRROR=/path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT="$PWD"
export SEMATLAS_ROOT="$ROOT"
PYTHON_BIN="${PYTHON:-python3}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    echo "[sematlas] creating $VENV with $("$PYTHON_BIN" --version)"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  local stamp="$VENV/.sematlas-installed"
  if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ lib/pyproject.toml -nt "$stamp" ]; then
    echo "[sematlas] installing pinned requirements into $VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e lib
    touch "$stamp"
  fi
  # Pair every notebook with an .ipynb for JupyterLab (the .py stays the source of truth).
  "$VENV/bin/jupytext" --quiet --sync notebooks/[0-9]*.py notebooks/demos/*.py >/dev/null
}

run_tests() {
  echo "[sematlas] 1/4 lint, format (ruff) and types (mypy)"
  "$VENV/bin/ruff" check lib tests benchmarks notebooks/[0-9]*.py notebooks/demos
  "$VENV/bin/ruff" format --check lib tests benchmarks notebooks/[0-9]*.py notebooks/demos
  "$VENV/bin/mypy" --config-file lib/pyproject.toml lib/sematlas
  echo "[sematlas] 2/4 library unit tests"
  "$PY" -m pytest tests -q
  echo "[sematlas] 3/4 every stage on the ci profile, then the manuscript from its results (pandoc fallback)"
  "$PY" -m sematlas.pipeline run ci
  "$PY" -m sematlas.reporting.manuscript render ci --pandoc --strict
  echo "[sematlas] 4/4 nbval over the executed ci notebooks"
  "$PY" -m pytest -p no:python --nbval-lax --nbval-current-env -q notebooks/executed/ci/
}

setup
if [ "${1:-}" = "test" ]; then
  shift
  run_tests "$@"
else
  profile="quick"
  if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then profile="$1"; shift; fi
  "$PY" -m sematlas.pipeline run "$profile" "$@"
  # The manuscript last, from whatever the stages have written (quarto when installed, else pandoc).
  "$PY" -m sematlas.reporting.manuscript render "$profile"
  # What came out: the headline results against their baselines, with their files, and each stage's wall time.
  "$PY" -m sematlas.pipeline summary "$profile"
fi
