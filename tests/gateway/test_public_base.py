"""Behind a TLS-terminating proxy: the console signs in from the public origin, its cookies are
Secure, and the addresses the gateway answers with are the public ones (public_base_url)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from screening.protection import PersonalDataVault
from screening.settings import Settings
from tests.conftest import RunningGateway, gateway_with
from tests.gateway.test_scans import BRIGHT, metadata, tiny_detector, upload

PUBLIC = "https://gw.example/screening"


@pytest.fixture
async def proxied(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[RunningGateway]:
    settings = Settings(
        data_dir=tmp_path,
        api_key_cache_s=0.0,
        public_base_url=PUBLIC + "/",
        model_path=tiny_detector(tmp_path / "tiny.onnx"),
    )
    async with gateway_with(settings, pool, vault) as gw:
        yield gw


async def test_a_browser_on_the_public_origin_signs_in_with_secure_cookies(
    proxied: RunningGateway,
) -> None:
    key = proxied.keys.by_role["supervisor"]
    url = f"{proxied.url}/console/session"
    async with proxied.http.post(
        url, json={"api_key": key}, headers={"Origin": "https://gw.example"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        cookies = resp.headers.getall("Set-Cookie")
    assert len(cookies) == 2
    assert all("Secure" in c and "SameSite=Strict" in c for c in cookies)
    async with proxied.http.post(
        url, json={"api_key": key}, headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403


async def test_image_addresses_are_the_public_ones(proxied: RunningGateway) -> None:
    status, body = await upload(proxied, metadata(proxied, "SC0000000016"), image=BRIGHT)
    assert status == 201, body
    assert body["image_url"].startswith(f"{PUBLIC}/v1/scans/")
