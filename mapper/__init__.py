"""SNN partitioning and placement onto NeuroVM cores (issue #6; not built yet).

The mapper will produce :class:`neurovm.image.CoreImage` objects, one per
virtual core, plus the vcore -> physical core table for the MMU.
"""
