"""What the target tests need from the machine: each skips, with the line that installs it, only where
the machine lacks it (CI installs nginx-light and the targets extra, so there they run)."""

from __future__ import annotations

import pytest

from lossbench.targets import TargetError, thin_python
from lossbench.targets.nginx import find_nginx


def _nginx_missing() -> bool:
    try:
        find_nginx()
    except TargetError:
        return True
    return False


needs_nginx = pytest.mark.skipif(
    _nginx_missing(), reason="nginx is not installed (apt-get install nginx-light); CI installs it"
)
needs_aiohttp = pytest.mark.skipif(not thin_python.aiohttp_installed(), reason="pip install '.[targets]'")
