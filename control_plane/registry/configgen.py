"""From a model's spec and a version's signature to the rendered config.pbtxt."""

from __future__ import annotations

from control_plane.modelconfig.config import batching_plan, build_config, render_config
from control_plane.modelconfig.specs import InstanceGroupSpec, Signature
from control_plane.registry.schemas import ModelSpec
from control_plane.settings import Settings


def generate_config(
    *, name: str, model_format: str, spec: ModelSpec, signature: Signature, settings: Settings
) -> str:
    """The config.pbtxt text for one version on this deployment's runtime and devices."""
    max_batch_size, per_item = batching_plan(signature, requested_max_batch_size=spec.max_batch_size)
    config = build_config(
        name=name,
        model_format=model_format,  # type: ignore[arg-type]
        signature=per_item,
        max_batch_size=max_batch_size,
        dynamic_batching=spec.dynamic_batching,
        instance_group=spec.instance_group or InstanceGroupSpec(),
        runtime=settings.triton_runtime,
        device=settings.triton_device,
        gpus=settings.triton_gpus,
        warmup=spec.warmup,
    )
    return render_config(config)


def declared_signature(spec: ModelSpec) -> Signature | None:
    """The publisher's declared inputs/outputs, if both were given."""
    if spec.inputs is None or spec.outputs is None:
        return None
    return Signature(inputs=spec.inputs, outputs=spec.outputs)
