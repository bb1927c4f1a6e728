"""Fixtures for model-layer tests: the tiny Llama model directory, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_llama import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
