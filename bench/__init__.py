"""Side-by-side benchmarks: fakecfs against a C libfuse filesystem, our ocfs2_hb_ctl against C.

Every number is measured in the same run as its reference, with the same client, and is
reported as a ratio (``python -m bench``; see docs/benchmarks.md). Nothing here asserts on
time: the targets are printed next to the ratios for a person to read.
"""
