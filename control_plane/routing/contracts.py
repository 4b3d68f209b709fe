"""A version's request contract, read from the config.pbtxt Triton loads it with."""

from __future__ import annotations

from functools import lru_cache

from control_plane.dataplane.contract import Contract, TensorRule
from control_plane.modelconfig.config import parse_config
from control_plane.modelconfig.specs import datatype_from_triton

UNCHECKABLE = Contract(inputs={}, outputs=frozenset(), max_batch_size=0)


@lru_cache(maxsize=8192)
def contract_from_config(config_text: str | None) -> Contract:
    """Inputs (dims with the batch dimension in front when the model batches), outputs, max_batch_size.

    A version without a readable config gets a contract no request satisfies: it never loaded anyway.
    """
    if not config_text:
        return UNCHECKABLE
    try:
        config = parse_config(config_text)
        batch = (-1,) if config.max_batch_size > 0 else ()
        inputs = {
            spec.name: TensorRule(
                name=spec.name,
                datatype=datatype_from_triton(spec.data_type),
                dims=batch + tuple(int(dim) for dim in spec.dims),
                optional=spec.optional,
            )
            for spec in config.input
        }
    except Exception:  # an unreadable config serves nothing; never take the routing table down
        return UNCHECKABLE
    return Contract(
        inputs=inputs,
        outputs=frozenset(spec.name for spec in config.output),
        max_batch_size=int(config.max_batch_size),
    )
