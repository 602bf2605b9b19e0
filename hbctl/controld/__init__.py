"""The ocfs2_controld user-stack group service: client protocol, daemon core and shells.

``proto`` is the wire codec both sides share (the daemon here and hbctl's client side);
``mountgroups`` is the daemon's state machine; the rest are the thin I/O shells around them.
"""
