# Sourced by scripts/serve and scripts/test: make ./.venv hold exactly the pinned dependencies
# of the given lock file, re-installing only when the lock file changed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VOXMATCH_VENV:-$repo_root/.venv}"

find_python() {
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "voxmatch needs Python >= 3.11 (on Debian: apt-get install python3)" >&2
    return 1
}

ensure_venv_module() {
    local python="$1"
    # Debian splits ensurepip out of the interpreter; without it `python3 -m venv` fails.
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
        local pkg
        pkg="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "installing $pkg (needed to create the virtual environment)" >&2
            apt-get install -y -q "$pkg" >&2 || { apt-get update -q >&2 && apt-get install -y -q "$pkg" >&2; }
        else
            echo "please run: sudo apt-get install $pkg" >&2
            return 1
        fi
    fi
}

ensure_chromium() {
    # The browser tests drive Debian's chromium (Playwright's own browser download needs a host
    # the machines cannot reach).
    [ -x /usr/bin/chromium ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (for the browser tests of the web page)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2; } ||
            echo "could not install chromium: the browser tests (tests/web) will fail" >&2
    else
        echo "the browser tests need chromium: sudo apt-get install chromium" >&2
    fi
}

bootstrap() {
    local lock="$repo_root/requirements/$1.lock"
    local stamp="$venv/.voxmatch-$1.sha256"
    local want
    want="$(cat "$lock" "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        local python
        python="$(find_python)"
        ensure_venv_module "$python"
        echo "creating virtual environment in $venv" >&2
        "$python" -m venv "$venv"
    fi
    echo "installing pinned dependencies from requirements/$1.lock" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$repo_root" >&2
    echo "$want" >"$stamp"
}
