"""The whole ICT head, built once per test run from the real archive (about 10 s), and a generator."""

import pytest


@pytest.fixture(scope="session")
def head(ict_archive, ict_model):
    from lsqface.synthetic.head import build_head

    return build_head(ict_archive, ict_model.triangles)


@pytest.fixture(scope="session")
def photo_generator(ict_uv_model, head):
    from lsqface.synthetic.photoreal import PhotoGenerator

    return PhotoGenerator(ict_uv_model, head)
