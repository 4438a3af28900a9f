#!/usr/bin/env bash
# The project's two commands (see README.md):
#   ./dev.sh lab [jupyter lab options]   install, build the front end, open JupyterLab on the quickstart notebook
#   ./dev.sh test                        install (plus Chromium when missing), build, run every check, build the docs
# CRP_VENV=/path puts the virtual environment elsewhere (default: .venv); PYTHON picks the interpreter that makes it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CRP_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
CHROMIUM=/usr/bin/chromium
cd "$ROOT"

log() { printf '\n==> %s\n' "$*"; }

usage() {
  echo "usage: ./dev.sh lab [jupyter lab options] | ./dev.sh test" >&2
  exit 2
}

ensure_node_modules() {
  command -v npm >/dev/null || { echo "dev.sh needs Node.js 20+ with npm on PATH" >&2; exit 1; }
  local stamp=node_modules/.crp-stamp want
  want="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "Installing the JavaScript dependencies (npm ci)"
    npm ci --no-audit --no-fund
    echo "$want" >"$stamp"
  fi
}

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "Creating the virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.crp-install-stamp" want
  want="$(cat pyproject.toml package.json package-lock.json | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "Installing crp_widgets (editable, extras test, docs and lab) into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -e ".[test,docs,lab]"
    echo "$want" >"$stamp"
  fi
}

ensure_chromium() {
  [[ -x "$CHROMIUM" ]] && return
  log "Installing Debian's chromium and fonts-liberation for the browser tests"
  local sudo=()
  [[ "$EUID" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-liberation
  [[ -x "$CHROMIUM" ]] || { echo "apt-get finished but $CHROMIUM is still missing" >&2; exit 1; }
}

build_front_end() {
  log "Building the front-end bundle (npm run build)"
  npm run build
}

# zennit 1.0 is what pip installs on Python 3.11.11 and newer; this machine's Python resolves 0.5.1. The engine, scan
# and analysis tests run once more in a small environment that sees the main one's packages and holds zennit 1.0 on
# top (it comes first on sys.path); the main environment keeps its zennit.
ZENNIT1="${CRP_ZENNIT1_VENV:-$ROOT/.venv-zennit1}"
ZENNIT1_TESTS=(tests/test_engine_*.py tests/test_token_layers.py tests/test_scan.py tests/test_references.py)

ensure_zennit1() {
  if [[ ! -x "$ZENNIT1/bin/python" ]]; then
    log "Creating $ZENNIT1 (zennit 1.0 over the main environment's packages)"
    "$PYTHON" -m venv "$ZENNIT1"
  fi
  local site main
  site="$("$ZENNIT1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  main="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "import site; site.addsitedir('$main')" >"$site/crp_main_environment.pth"
  if [[ "$("$ZENNIT1/bin/python" -c 'import importlib.metadata as m; print(m.version("zennit"))' 2>/dev/null)" != 1.0.0 ]] ||
    ! "$ZENNIT1/bin/python" -c "import zennit, sys; sys.exit(not zennit.__file__.startswith('$site'))"; then
    "$ZENNIT1/bin/python" -m pip install --disable-pip-version-check --no-deps --ignore-requires-python \
      --target "$site" --upgrade zennit==1.0.0
  fi
}

test_with_zennit1() {
  ensure_zennit1 || return 1
  "$ZENNIT1/bin/python" -c 'import zennit, importlib.metadata as m; print("zennit", m.version("zennit"), zennit.__file__)'
  "$ZENNIT1/bin/python" -m pytest "${ZENNIT1_TESTS[@]}"
}

# LXT (Achtibat et al. 2024), the reference implementation of CP-LRP and AttnLRP for transformers, for
# tests/test_lxt.py: its package imports transformers, so both go into .lxt with the versions LXT 2.1 works with
# (pure Python packages and one tokenizers wheel; the tests add .lxt after the main environment's packages).
LXT_DIR="${CRP_LXT:-$ROOT/.lxt}"
LXT_PINS=(lxt==2.1 transformers==4.51.3 huggingface_hub==0.30.2 tokenizers==0.21.4 regex==2026.12.2)

ensure_lxt() {
  if [[ "$(cat "$LXT_DIR/.pins" 2>/dev/null)" != "${LXT_PINS[*]}" ]]; then
    log "Installing LXT into $LXT_DIR (for tests/test_lxt.py)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps --upgrade --target "$LXT_DIR" \
      "${LXT_PINS[@]}"
    echo "${LXT_PINS[*]}" >"$LXT_DIR/.pins"
  fi
  export CRP_LXT="$LXT_DIR"
}

# The docs site (mkdocs.yml, docs/): a broken link, page or API reference fails the build. Built into a temporary
# directory: the check needs the build to pass, not the site.
build_docs() {
  local site status=0
  site="$(mktemp -d)"
  NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --site-dir "$site" || status=$?
  rm -rf "$site"
  return "$status"
}

run_checks() {
  local failed=()
  check() {
    local name="$1"
    shift
    log "$name"
    "$@" || failed+=("$name")
  }
  check "npm run typecheck" npm run typecheck
  check "npm test" npm test
  check "ruff check" "$VENV/bin/ruff" check .
  check "ruff format --check" "$VENV/bin/ruff" format --check .
  check "pytest" "$VENV/bin/python" -m pytest tests
  check "pytest with zennit 1.0 (engine, scans, analyses)" test_with_zennit1
  check "mkdocs build --strict" build_docs
  if ((${#failed[@]})); then
    printf '\ndev.sh test: FAILED: %s\n' "$(IFS=,; echo "${failed[*]}")"
    return 1
  fi
  printf '\ndev.sh test: all checks passed\n'
}

case "${1:-}" in
  lab)
    shift
    ensure_node_modules
    ensure_venv
    build_front_end
    root_flag=()
    [[ "$EUID" -ne 0 ]] || root_flag=(--allow-root)
    exec "$VENV/bin/jupyter" lab "${root_flag[@]}" "$@" example_notebooks/quickstart.ipynb
    ;;
  test)
    [[ $# -eq 1 ]] || usage
    ensure_node_modules
    ensure_venv
    ensure_chromium
    ensure_lxt
    build_front_end
    run_checks
    ;;
  *) usage ;;
esac
