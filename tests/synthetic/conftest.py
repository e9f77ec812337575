"""The whole ICT head, built once per test run from the real archive (about 10 s), and a generator."""

import pytest


@pytest.fixture(scope="module")
def head(ict_archive, ict_model, built_once):
    from lsqface.synthetic.head import build_head

    return built_once("head", lambda: build_head(ict_archive, ict_model.triangles))


@pytest.fixture(scope="module")
def photo_generator(ict_uv_model, head, built_once):
    from lsqface.synthetic.photoreal import PhotoGenerator

    return built_once("photo_generator", lambda: PhotoGenerator(ict_uv_model, head))
