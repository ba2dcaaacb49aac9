"""The NeuroVM chip in Amaranth HDL 0.5.

So far: :mod:`.layouts`, the Amaranth ``data.Struct`` views of the shared word
formats.  The core, router, MMU, host interface and chip top follow (issues
#3-#5).
"""
