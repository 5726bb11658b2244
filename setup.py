"""The one compiled part of azbai: ``azbai.local.md5x``, MD5s of several buffers at once (one per SIMD lane).

Optional: where it cannot be built (no C compiler), azbai hashes with hashlib alone, as before. Everything else about
the package is in setup.cfg.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "azbai.local.md5x",
            sources=["azbai/local/md5x.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
