"""dnpfs as pip builds it from pyproject.toml (what scripts/install and the
image install): no deprecation warning from the build backend, and the
license in the metadata as packaging tools read it now (PEP 639)."""

from __future__ import annotations

import re
import sys
import zipfile

from .conftest import copy_of_checkout, sh


def test_wheel_builds_without_warnings_and_carries_its_license(tmp_path):
    src = copy_of_checkout(tmp_path / "src")  # pip builds in the source tree
    r = sh([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "w"),
            str(src)], timeout=300)
    log = r.stdout + r.stderr
    warnings = [line for line in log.splitlines()
                if re.search(r"deprecat|BuildBackendWarning|SetuptoolsWarning", line, re.I)]
    assert not warnings, "\n".join(warnings)
    [wheel] = (tmp_path / "w").glob("dnpfs-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        text = z.read(metadata).decode()
    assert "License-Expression: MIT" in text.splitlines()
    assert "License-File: LICENSE" in text.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
