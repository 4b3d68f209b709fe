"""Rewrite Triton's internal model name in response headers without decoding tensors."""

from __future__ import annotations

import re
from functools import lru_cache

import orjson

# Triton features a client cannot use through the proxy (shared memory, repository control, ...).
HIDDEN_EXTENSIONS = frozenset(
    {
        "system_shared_memory",
        "cuda_shared_memory",
        "model_repository",
        "model_repository(unload_dependents)",
        "statistics",
        "trace",
        "logging",
    }
)


@lru_cache(maxsize=4096)
def _name_fields(triton_name: str, model: str, version: int) -> tuple[bytes, bytes]:
    """Triton's `"model_name":...,"model_version":"1"` and what replaces it (built once per version)."""
    old = b'"model_name":' + orjson.dumps(triton_name) + b',"model_version":"1"'
    new = b'"model_name":' + orjson.dumps(model) + b',"model_version":"' + str(version).encode() + b'"'
    return old, new


def rewrite_infer_response(
    body: bytes, *, header_length: int | None, triton_name: str, model: str, version: int
) -> tuple[bytes, memoryview, int | None]:
    """(the start of the answer, the untouched rest of the body, new header length for the binary
    extension).

    Triton writes `"model_name":"<name>","model_version":"1"` at the start of its JSON header (after the
    request's `id`, which may be long); only that part is replaced, and nothing after it is copied (a
    19 MB JSON answer was copied three times, 20 ms). Inside a JSON string every quote is escaped, so
    those bytes can only be the field itself; the first occurrence is Triton's own, written before
    `parameters` and `outputs`. Anything unexpected falls back to parsing the JSON header.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise ValueError(f"header length {header_length} is outside a body of {len(body)} bytes")
    json_end = header_length if header_length is not None else len(body)
    old, new = _name_fields(triton_name, model, version)
    at = body.find(old, 0, json_end)
    if at >= 0:
        rest = at + len(old)
        new_length = json_end - len(old) + len(new) if header_length is not None else None
        return body[:at] + new, memoryview(body)[rest:], new_length
    document = orjson.loads(body[:json_end])
    document["model_name"], document["model_version"] = model, str(version)
    head = orjson.dumps(document)
    new_length = len(head) if header_length is not None else None
    return head, memoryview(body)[json_end:], new_length  # the tensors are not copied


def rewrite_metadata(body: bytes, *, triton_name: str, model: str, version: int) -> bytes:
    """Model metadata or config as the client should see it: its own name everywhere, its version."""
    # Names are lowercase letters, digits, '-' and '_': no JSON escaping to get in the way.
    document = orjson.loads(body.replace(triton_name.encode(), model.encode()))
    document["name"] = model
    if "versions" in document:
        document["versions"] = [str(version)]
    return orjson.dumps(document)


def server_metadata(body: bytes) -> bytes:
    """Triton's server metadata under our name, without the extensions the proxy does not offer."""
    document = orjson.loads(body)
    extensions = document.get("extensions", [])
    document["extensions"] = [e for e in extensions if e not in HIDDEN_EXTENSIONS]
    document["name"] = "triton-control-plane"
    return orjson.dumps(document)


# What Triton's Python backend appends to a model's exception: "At:", frames "  <file>(<line>): <function>".
# (Triton ends each version's reason with ";", after that traceback when there is one.)
# The lookbehind starts a match only at the first of a run of newlines: tried from each of them, a run
# of 20k newlines cost 0.28 s (quadratic), on every request to a version whose load failed with it.
_TRACEBACK = re.compile(r"(?<!\n)\n+At:\n(?:[ \t]+[^\n]*\(\d+\): [^\n]*(?:\n|$))+(?:;[ \t]*(?:\n|$))?")
# The folders of an absolute path starting a token (not "10/20/30", "a/b", "~/x", "s3://b/k", "h:80/v2/x").
_FOLDERS = re.compile(r"(?<![\w.~:/@+-])/(?:[\w.@+-]+/)+")
_TRITON_AT = re.compile(r"\bTriton at \S+")  # the loader's words for an instance it could not reach


def hide_internal_name(message: str, *, triton_name: str, model: str) -> str:
    """Triton's error text in the client's terms: the internal model name replaced by the client's,
    without the Python traceback the Python backend appends to a model's exception (`At:` and the
    frames, naming the server's model repository), the address of a Triton the loader could not reach,
    or the folders of absolute paths (a file keeps its name). The rest, a model's own words included
    (numbers with slashes, URLs, relative paths), is left as it was."""
    text = _TRACEBACK.sub(_cut, _at_most(message, MESSAGE_CHARS, triton_name)).rstrip()
    return _FOLDERS.sub("", _TRITON_AT.sub("Triton", text.replace(triton_name, model)))


# What of an error's text is rewritten and shown: a model's exception (or a load failure's reason) of
# 450 KB took 27 ms of the event loop to rewrite, for each request that met it.
MESSAGE_CHARS = 16384


def _at_most(message: str, limit: int, name: str) -> str:
    """The message cut to `limit` characters, without a part of `name` left at the cut."""
    if len(message) <= limit:
        return message
    cut = message[:limit]
    for size in range(len(name) - 1, 0, -1):
        if cut.endswith(name[:size]):
            return cut[:-size]
    return cut


def _cut(traceback: re.Match[str]) -> str:
    """Nothing for a traceback at the end; "; " between one version's reason and the next one's."""
    return "" if traceback.end() == len(traceback.string) else "; "
