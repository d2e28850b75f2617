#!/usr/bin/env bash
# `make deb`: build the rustpbx-py .deb from the working tree and put it in dist/.
#
# Installs what the build needs with apt (as root; otherwise says what is
# missing), builds in a scratch copy of the tree so that the working tree and
# its parent directory stay clean (dpkg-buildpackage writes the .deb, .changes
# and .buildinfo next to the source directory), then runs lintian and fails
# on any error it reports.
#
# Environment:
#   DEB_BUILD_OPTIONS   passed through (nocheck skips the trial run)
#   RUSTPBX_DEB_SRC     build this tree instead of the one holding this script
#   RUSTPBX_DEB_OUT     where to put the .deb (default: <tree>/dist)
#   RUSTPBX_DEB_KEEP    set: keep the scratch build tree (its path is printed)
set -euo pipefail

# Debian's tools with Debian's Python: no pyenv shims, virtualenvs or
# PYTHONPATH from the developer's shell (pybuild runs "python3.11" from PATH).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYENV_VERSION PIP_REQUIRE_VIRTUALENV

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=${RUSTPBX_DEB_SRC:-$here}
out=${RUSTPBX_DEB_OUT:-$here/dist}
export DEBIAN_FRONTEND=noninteractive

say() { printf 'build-deb: %s\n' "$*" >&2; }

apt_install() {
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
    if ! "${apt[@]}" "$@"; then
        say "apt-get failed; refreshing the package lists and retrying"
        apt-get -o DPkg::Lock::Timeout=600 update -q
        "${apt[@]}" "$@"
    fi
}

# 1. Tools and build dependencies (debian/control is the one list).
tools=(dpkg-dev debhelper fakeroot lintian build-essential)
if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${tools[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install install "${missing[@]}"
    fi
    if ! (cd "$src" && dpkg-checkbuilddeps >/dev/null 2>&1); then
        (cd "$src" && apt_install build-dep ./)
    fi
else
    if ! (cd "$src" && dpkg-checkbuilddeps); then
        say "run as root to install the build dependencies, or install them: sudo apt-get build-dep ./"
        exit 1
    fi
fi

# 2. A scratch copy: what `git ls-files` plus uncommitted files hold, minus
#    caches, virtualenvs and earlier build results.
work=$(mktemp -d /tmp/rustpbx-deb.XXXXXX)
[ -n "${RUSTPBX_DEB_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir "$work/rustpbx-py"
tar -C "$src" \
    --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
    --exclude=./.pybuild --exclude='./*.egg-info' --exclude='_trial_temp*' \
    --exclude=__pycache__ --exclude=dropin.cache --exclude='*.pyc' \
    --exclude=./debian/rustpbx-py --exclude=./debian/.debhelper \
    --exclude=./debian/files --exclude='./debian/*.substvars' \
    --exclude='./debian/*.log' --exclude=./data --exclude=./config \
    --exclude=./queues --exclude=./bench/results/raw --exclude=node_modules \
    -cf - . | tar -C "$work/rustpbx-py" -xf -

# 3. Build.
say "building in $work/rustpbx-py"
(cd "$work/rustpbx-py" && dpkg-buildpackage -us -uc -b)

mkdir -p "$out"
debs=("$work"/rustpbx-py_*.deb)
rm -f "$out"/rustpbx-py_*.deb
cp "${debs[@]}" "$out/"
say "built: $(cd "$out" && ls rustpbx-py_*.deb)"

# 4. Lintian: warnings are shown, errors fail the build.
if command -v lintian >/dev/null; then
    lintian --display-info --fail-on error "$out"/rustpbx-py_*.deb
else
    say "lintian is not installed; skipping the package check"
fi
