"""Names that become Triton model names, object keys and path components."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

# Lowercase letters and digits, single '-' or '_' between them: no '..', '/', '--' (our separator), no spaces.
NAME_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
MAX_NAME_LENGTH = 63

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_RE.pattern)]


def is_valid_name(value: str) -> bool:
    """True for a name that is safe as a Triton model name, object key and path part."""
    return 0 < len(value) <= MAX_NAME_LENGTH and NAME_RE.fullmatch(value) is not None


def triton_model_name(*, tenant: str, model: str, model_id: int, version: int) -> str:
    """The internal Triton name of one version; the model id keeps re-created models apart."""
    return f"{tenant}--{model}--{model_id}--v{version}"
