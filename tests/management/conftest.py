from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clusterfunk.management.server import ManagementServer, open_management_server
from tests.management.fake import FakeNode

TOKEN = "s3cret-token"


@pytest.fixture
def fake() -> FakeNode:
    return FakeNode()


@pytest.fixture
async def server(fake: FakeNode) -> AsyncIterator[ManagementServer]:
    async with open_management_server(fake, "127.0.0.1:0", token=TOKEN) as s:
        yield s
