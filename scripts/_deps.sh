# Shared by scripts/install and scripts/test: Debian packages and the virtualenv.
# Installs only what is missing, so a second run takes seconds.

need_debs() {
    local missing=()
    for pkg in "$@"; do
        # dpkg-query, not dpkg -s: a removed package whose config files remain is missing.
        [ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] \
            || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "dnpfs: installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# make_venv DIR EXTRAS [editable]: a virtualenv with dnpfs from this checkout.
# By default a package, built and installed like any other: it no longer needs
# the checkout (scripts/install).  "editable" points into the checkout instead,
# so that the tests run the code being edited (scripts/test, .venv).
# Runtime dependencies at the versions the image pins (deploy/requirements.txt as
# constraints): tests, installs and the image run the same releases.
make_venv() {
    local venv=$1 extras=$2 mode=${3:-} repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    install_pyfuse3 "$venv/bin/python" "$repo"
    if [ "$mode" = editable ]; then
        "$venv/bin/python" -m pip install -q -c "$repo/deploy/requirements.txt" -e "$repo$extras"
        return
    fi
    # Built from a copy of what the package is made of (the files the
    # Dockerfile copies too): pip builds in the source tree, where setuptools
    # would add whatever an earlier build left in build/ to the wheel, and the
    # checkout stays as it was.
    (
        src=$(mktemp -d)
        trap 'rm -rf "$src"' EXIT
        tar -C "$repo" -c --exclude=__pycache__ pyproject.toml README.md LICENSE dnpfs \
            | tar -C "$src" -x
        "$venv/bin/python" -m pip install -q -c "$repo/deploy/requirements.txt" "$src$extras"
    )
}

# install_pyfuse3 PYTHON REPO: pyfuse3 built with dnpfs's patches
# (scripts/pyfuse3-source), unless that build is there already.
install_pyfuse3() {
    local python=$1 repo=$2 tmp out
    [ "$("$python" -c 'import importlib.metadata as m; print(m.version("pyfuse3"))' 2>/dev/null)" \
        = "$("$repo/scripts/pyfuse3-source" --version)" ] && return 0
    tmp=$(mktemp -d)
    out=$("$repo/scripts/pyfuse3-source" "$tmp" "$python" -m pip)
    echo "dnpfs: building pyfuse3 with dnpfs's patches" >&2
    SETUPTOOLS_SCM_PRETEND_VERSION=$(sed -n 2p <<<"$out") \
        "$python" -m pip install -q "$(sed -n 1p <<<"$out")"
    rm -rf "$tmp"
}

# libjemalloc2: the daemon's malloc (dnpfs/allocator.py); without it, glibc's.
# attr: getfattr, which shows a pipe's attributes (README).
# patch: applies dnpfs's patches to pyfuse3 (scripts/pyfuse3-source).
BASE_DEBS=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv libjemalloc2 attr patch)
