"""Why a load failed, as a model's callers are told (`routing.table.public_reason`): Triton's reason in
their terms, without our internal names, the server's folders, a traceback, or the prefixes that named
the model again and Triton's own version folder."""

from __future__ import annotations

import time

import pytest

from control_plane.dataplane.rewrite import hide_internal_name
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


def test_an_unreachable_triton_is_not_named_by_its_address() -> None:
    told = public_reason(
        f"Triton at http://10.0.3.7:8001 unavailable (load {NAME}): Deadline Exceeded", NAME, "b"
    )
    assert told == "Triton unavailable (load b): Deadline Exceeded"


def test_an_inference_failure_keeps_the_models_words_only() -> None:
    """What a Python model's `execute()` raised, as Triton's Python backend reports it."""
    message = (
        f"Failed to process the request(s) for model '{NAME}_0_0', message: KeyError: 'bucket'\n\nAt:\n"
        f"  /srv/cp/model_repository/{NAME}/1/model.py(9): execute\n"
        "  <string>(1): <module>\n"
    )
    told = hide_internal_name(message, triton_name=NAME, model="broken")
    assert told == "Failed to process the request(s) for model 'broken_0_0', message: KeyError: 'bucket'"


@pytest.mark.parametrize(
    "words",
    [
        "value 10/20/30 out of range on 2024/01/02",
        "speed in km/h/s, ratio a/b/c",
        "see https://docs.example.com/errors#E12 or www.example.com/docs/page",
        "read s3://bucket/key/part-0 and ~/data/x.csv and localhost:8000/v2/models",
        "line one\nAt: row 7\nline three",
    ],
)
def test_a_models_own_words_are_left_as_they_were(words: str) -> None:
    """Found by an adversarial run: numbers with slashes lost their middles ('10/20/30' read '1030'),
    a URL of the model's own became 'the inference server', and its own line 'At: row 7' was dropped."""
    message = f"message: ValueError: {words}\n\nAt:\n  /srv/repo/{NAME}/1/model.py(3): execute\n"
    assert hide_internal_name(message, triton_name=NAME, model="m") == f"message: ValueError: {words}"


def test_a_load_failures_traceback_goes_with_the_separator_triton_ends_it_with() -> None:
    message = (
        f"load failed for model '{NAME}': version 1 is at UNAVAILABLE state: Internal: RuntimeError: w.bin"
        f" is missing\n\nAt:\n  /tmp/repo/{NAME}/1/model.py(8): initialize\n;\n"
    )
    assert public_reason(message, NAME, "b") == "Internal: RuntimeError: w.bin is missing"
    twice = message.replace(
        ";\n", ";\nversion 2 is at UNAVAILABLE state: Internal: no\n\nAt:\n  x.py(1): f\n;\n"
    )
    assert public_reason(twice, NAME, "b").endswith(
        "w.bin is missing; version 2 is at UNAVAILABLE state: Internal: no"
    )


def test_absolute_paths_keep_their_file_name_only() -> None:
    told = hide_internal_name("cannot open /data/in.csv ('/opt/x/y.so')", triton_name=NAME, model="m")
    assert told == "cannot open in.csv ('y.so')"


def test_a_run_of_newlines_is_rewritten_in_linear_time() -> None:
    """The traceback pattern was tried from each newline of a run, quadratic: 20k newlines in a model's
    error (a load failure's reason is rewritten for every request to that version) took 0.28 s of the
    event loop, so 200k would take ~28 s; linear, it takes milliseconds."""
    from control_plane.dataplane.rewrite import _TRACEBACK

    text = "\n" * 200_000 + "x"  # past the cut of messages: the pattern itself
    started = time.perf_counter()
    assert _TRACEBACK.search(text) is None
    assert time.perf_counter() - started < 2.0


def test_a_huge_message_is_cut_before_it_is_rewritten_and_no_part_of_the_name_is_left() -> None:
    """A model's exception (or a load failure's reason) of 450 KB took 27 ms to rewrite, for every
    request that met it: the text is cut first, and a cut through the internal name drops its part."""
    from control_plane.dataplane.rewrite import MESSAGE_CHARS

    filler = "x" * (MESSAGE_CHARS - 5)
    shown = hide_internal_name(filler + NAME + " y" * 200_000, triton_name=NAME, model="broken")
    assert shown == filler and len(shown) <= MESSAGE_CHARS
    whole = "failed: " + NAME
    assert hide_internal_name(whole, triton_name=NAME, model="broken") == "failed: broken"
