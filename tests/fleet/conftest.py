from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))  # servers.py


@pytest.fixture
def namespace() -> str:
    return "fleet-test-" + uuid.uuid4().hex[:10]
