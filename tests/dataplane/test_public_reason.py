"""Why a load failed, as a model's callers are told (`routing.table.public_reason`): Triton's reason in
their terms, without our internal names, the server's folders, a traceback, or the prefixes that named
the model again and Triton's own version folder."""

from __future__ import annotations

import pytest

from control_plane.routing.table import public_reason

NAME = "acme--broken--v3-1a2b3c"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (  # the Python backend, through the loader's HTTP call
            f"Triton could not load '{NAME}': load failed for model '{NAME}': version 1 is at UNAVAILABLE "
            "state: Internal: RuntimeError: weights file w.bin is missing\n\nAt:\n"
            f"  /srv/repo/{NAME}/1/model.py(12): initialize\n",
            "Internal: RuntimeError: weights file w.bin is missing",
        ),
        (  # Triton's own words, without the loader's prefix
            f"load failed for model '{NAME}': version 1 is at UNAVAILABLE state: Invalid argument: model "
            f"'{NAME}', tensor 'x': the model expects 2 dimensions (shape [-1,4]) but the model "
            "configuration specifies 3 dimensions",
            "Invalid argument: model 'broken', tensor 'x': the model expects 2 dimensions (shape [-1,4]) "
            "but the model configuration specifies 3 dimensions",
        ),
        (  # no prefix at all: only the name and the folders change
            f"failed to open /var/lib/triton/models/{NAME}/1/model.onnx: no such file",
            "failed to open model.onnx: no such file",
        ),
    ],
)
def test_a_load_failure_is_told_in_the_callers_terms(message: str, shown: str) -> None:
    assert public_reason(message, NAME, "broken") == shown


def test_a_long_reason_is_cut_and_whitespace_folded() -> None:
    told = public_reason("Internal:\n  " + "x " * 400, NAME, "broken")
    assert told.startswith("Internal: x x") and len(told) == 500 and "\n" not in told
