"""The reconcile loop and the data plane, connected: who tells whom what about the fleet."""

from __future__ import annotations

from control_plane.dataplane.upstream import Upstream
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.observed import InstanceObservation
from control_plane.fleet.reconciler import Reconciler


def wire_data_plane(reconciler: Reconciler, upstream: Upstream) -> None:
    """The data plane follows the fleet's membership, learns which instances answer again, and asks
    for a pass when a request could not reach an instance."""

    def members_changed(endpoints: list[TritonEndpoint]) -> None:
        upstream.endpoints = endpoints

    def passed(seen: dict[str, InstanceObservation]) -> None:
        for observation in seen.values():
            if observation.ready:
                upstream.seen_ready([observation.name], observation.probed_at)

    members_changed(list(reconciler.tritons))  # the embedded Triton joined the list after the upstream
    reconciler.members.listeners.append(members_changed)
    reconciler.after_pass.append(passed)
    upstream.on_down = lambda _name: reconciler.trigger()
