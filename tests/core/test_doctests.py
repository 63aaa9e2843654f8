"""Run the examples in the core modules' docstrings."""

from __future__ import annotations

import doctest

import pytest

from stroke_lesion_app.core import bids, images, lesionload


@pytest.mark.parametrize("module", [bids, images, lesionload], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
