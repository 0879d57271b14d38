"""Filesystem-level tests run on the embedded store: what they check (inodes,
errno values, the mount's life) does not depend on the backend."""

import pytest


@pytest.fixture
def mount(make_mount):
    return make_mount()
