"""hbctl: the OCFS2 o2cb heartbeat userland (libo2cb + ocfs2_hb_ctl) in Python."""
