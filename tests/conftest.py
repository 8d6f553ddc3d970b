from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Provisioned, provision


@pytest.fixture
def provisioned(tmp_path: Path) -> Provisioned:
    return provision(tmp_path)
