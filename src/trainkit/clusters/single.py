"""One machine: a single process, or processes whose launcher set torch.distributed's environment variables (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Nothing restarts or requeues them. Every process is in this environment unless
a more specific one detects itself."""

from __future__ import annotations

from trainkit.clusters import ClusterEnvironment
from trainkit.registry import register_cluster


@register_cluster("single")
class Single(ClusterEnvironment):
    name = "single"
    priority = 0
