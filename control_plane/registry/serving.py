"""Effective batching and instance settings (what Triton gets), and checking a change before it is made."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from control_plane.modelconfig.config import parse_config, render_config
from control_plane.modelconfig.exceptions import InvalidModelSpec
from control_plane.modelconfig.specs import Signature, TensorSpec
from control_plane.registry.configgen import generate_config
from control_plane.registry.schemas import DynamicBatchingOut, InstanceGroupOut, ModelSpec, Serving
from control_plane.settings import Settings

# What a version with a batch dimension on every tensor looks like, to check settings before any upload.
BATCHABLE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 1])],
    outputs=[TensorSpec(name="output", datatype="FP32", shape=[-1, 1])],
)


def serving_of_config(config_text: str | None) -> Serving:
    """The batching and instance settings a version's config.pbtxt gives it."""
    config = parse_config(config_text or "")
    batching = config.dynamic_batching
    enabled = config.HasField("dynamic_batching")
    group = config.instance_group[0] if config.instance_group else mc.ModelInstanceGroup(count=1)
    return Serving(
        max_batch_size=config.max_batch_size,
        dynamic_batching=DynamicBatchingOut(
            enabled=enabled,
            max_queue_delay_microseconds=batching.max_queue_delay_microseconds if enabled else 0,
            preferred_batch_size=list(batching.preferred_batch_size),
            preserve_ordering=batching.preserve_ordering,
        ),
        instance_group=InstanceGroupOut(
            count=group.count or 1,
            kind="gpu" if group.kind == mc.ModelInstanceGroup.KIND_GPU else "cpu",
            gpus=list(group.gpus),
        ),
    )


def model_serving(
    *, model_format: str, spec: ModelSpec, signature: Signature | None, settings: Settings
) -> Serving:
    """What the model's next version gets: from its latest (or declared) signature, else a batchable one."""
    try:
        text = check_spec(model_format=model_format, spec=spec, signature=signature, settings=settings)
    except InvalidModelSpec:
        text = check_spec(model_format=model_format, spec=ModelSpec(), signature=None, settings=settings)
    return serving_of_config(text)


def check_spec(*, model_format: str, spec: ModelSpec, signature: Signature | None, settings: Settings) -> str:
    """The config.pbtxt `spec` gives a version of `signature`, built and re-parsed through Triton's protobuf.

    InvalidModelSpec (422) naming the problem if Triton could not take it.
    """
    if signature is None:
        batching = spec.max_batch_size is None or spec.max_batch_size > 0
        signature = (
            BATCHABLE
            if batching
            else Signature(
                inputs=[t.model_copy(update={"shape": [1]}) for t in BATCHABLE.inputs],
                outputs=[t.model_copy(update={"shape": [1]}) for t in BATCHABLE.outputs],
            )
        )
    text = generate_config(
        name="validation", model_format=model_format, spec=spec, signature=signature, settings=settings
    )
    if render_config(parse_config(text)) != text:
        raise InvalidModelSpec("the settings do not survive Triton's model config format")
    return text
