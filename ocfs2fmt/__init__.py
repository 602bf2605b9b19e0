"""The formats both sides of the sysroot contract read: the emulated kernel (fakecfs) and
the userland (hbctl) import this package, never each other.

- `ondisk`: the ocfs2 superblock and heartbeat descriptor (a core over bytes);
- `blockdev`: reading them from a device or image file (``pread`` + ``BLKSSZGET``);
- `mtab`: the ``/proc/mounts`` field escaping.
"""
