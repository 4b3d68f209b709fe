# Shared by scripts/test and scripts/serve: the project's virtual environment.
# Usage: source scripts/_env.sh; ensure_venv ".[dev]"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

marker_for() { echo "$VENV/.installed-$(echo "$1" | tr -c 'a-z\n' '_')"; }

CONSTRAINTS="$ROOT/constraints.txt"

# A marker is fresh when neither pyproject.toml nor the constraints (lock) changed since it was made.
fresh() { [ -f "$1" ] && [ ! "$ROOT/pyproject.toml" -nt "$1" ] && [ ! "$CONSTRAINTS" -nt "$1" ]; }

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV"
        python3 -m venv "$VENV"
    fi
    # A marker newer than pyproject.toml skips the dependency resolution; [dev] includes [embedded].
    local marker
    marker="$(marker_for "$extras")"
    if ! fresh "$marker" && ! fresh "$(marker_for "[dev]")"; then
        echo "==> installing $extras into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        # Every version comes from constraints.txt (the lock; scripts/lock regenerates it), so installs
        # are reproducible. torch is pinned to the CPU wheel (see pyproject.toml); install it first so
        # nothing pulls a CUDA build.
        "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" "torch==2.13.0"
        "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e "$ROOT$extras"
        touch "$marker"
    fi
}
