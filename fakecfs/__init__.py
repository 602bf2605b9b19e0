"""fakecfs: an emulated Linux kernel for the OCFS2 o2cb heartbeat stack.

A pyfuse3 + trio filesystem whose root is a *sysroot*: the configfs tree
``sys/kernel/config/cluster/...`` with the kernel's o2nm/o2hb semantics, the
sysfs/proc/debugfs files the tools read, and behind them a real disk heartbeat.
"""

import ocfs2fmt  # noqa: F401  (refuses a Python older than supported, clearly)
