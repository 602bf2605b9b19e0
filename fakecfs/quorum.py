"""Global heartbeat mode's quorum of regions: when a write timeout fences the node.

In local mode every write timeout fences. In global mode (spec kernel-o2hb.md §8.7) a
region becomes a *quorum region* once it is steady and sees every node the node sees
(its live map equals the global one); a write timeout marks a quorum region failed, and
the node fences only when at least half of the quorum regions have failed
(``(failed << 1) >= quorum``); a good write clears the region's failed mark. A region
that is not a quorum region adds nothing to ``failed`` but still fences when nothing is a
quorum region (0 >= 0), as the kernel's arithmetic does. Pure code.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass
class GlobalQuorum:
    """o2hb_quorum_region_bitmap and o2hb_failed_region_bitmap."""

    quorum: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)

    def good_write(self, region_num: int, steady: bool, region_live: Collection[int],
                   global_live: Collection[int]) -> bool:
        """o2hb_set_quorum_device + o2hb_arm_timeout; True when it just became quorum."""
        if not steady:
            return False
        self.failed.discard(region_num)
        if region_num in self.quorum or set(region_live) != set(global_live):
            return False
        self.quorum.add(region_num)
        return True

    def write_timeout(self, region_num: int) -> bool:
        """o2hb_write_timeout in global mode: True when the node must fence."""
        if region_num in self.quorum:
            self.failed.add(region_num)
        return len(self.failed) * 2 >= len(self.quorum)

    def region_gone(self, region_num: int) -> None:
        """The region was stopped and dropped: it leaves both maps."""
        self.quorum.discard(region_num)
        self.failed.discard(region_num)
