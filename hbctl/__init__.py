"""hbctl: the OCFS2 o2cb heartbeat userland (libo2cb + ocfs2_hb_ctl) in Python."""

import ocfs2fmt  # noqa: F401  (refuses a Python older than supported, clearly)
