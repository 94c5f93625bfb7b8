"""Build of the C extensions (setuptools: their only build requirement is a C compiler)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "layerstore_accel._files",
            sources=["src/layerstore_accel/_files.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "layerstore_accel._tarheader",
            sources=["src/layerstore_accel/_tarheader.c"],
            depends=["src/layerstore_accel/tarblock.h"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "layerstore_accel._plainfiles",
            sources=["src/layerstore_accel/_plainfiles.c"],
            depends=["src/layerstore_accel/tarblock.h"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "layerstore_accel._tarsplit",
            sources=["src/layerstore_accel/_tarsplit.c"],
            depends=["src/layerstore_accel/tarblock.h"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
    ]
)
