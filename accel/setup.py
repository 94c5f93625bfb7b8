"""Build of the one C extension (setuptools: the extension's only build requirement is a C compiler)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "layerstore_accel._files",
            sources=["src/layerstore_accel/_files.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
    ]
)
