# The two commands of the README:
#   make run   - create .venv, install core and every plugin, run the demonstration on vfs
#   make test  - install what the tests need (Debian packages when root), run every suite on every driver
#
# Everything a fresh machine needs is installed from here; CI calls `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Debian packages the tests and benchmarks use: the btrfs and zfs backends, tools that
# make test inputs (GNU tar, bsdtar, compressors), the peers we compare with (tar-split,
# containers-storage), the image and registry peers (skopeo, umoci, podman, docker-registry),
# openssl for test certificates, apache2-utils (htpasswd) for the registry's bcrypt passwords, xattr tools, loop devices.
APT_PACKAGES := btrfs-progs zfs-fuse tar-split containers-storage libarchive-tools attr \
                e2fsprogs util-linux mount tar gzip bzip2 xz-utils zstd debootstrap fuse3 time \
                skopeo umoci podman docker-registry uidmap openssl apache2-utils
PLUGINS := vfs overlay btrfs zfs
TOX_ENVS ?= lint,type,core,vfs,overlay,btrfs,zfs,integration

.PHONY: run test bench venv apt-deps lint type clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The editable sources are compiled to byte-code here: a run with PYTHONDONTWRITEBYTECODE (tox,
# packagers) would otherwise compile every imported module on every start (a third of `layerstore --help`).
$(VENV)/.installed: $(BIN)/python core/pyproject.toml $(foreach p,$(PLUGINS),plugins/$(p)/pyproject.toml) accel/pyproject.toml accel/src/layerstore_accel/_files.c accel/src/layerstore_accel/_tarheader.c accel/src/layerstore_accel/_tarsplit.c accel/src/layerstore_accel/_plainfiles.c accel/src/layerstore_accel/tarblock.h
	$(PIP) install --quiet hatchling editables
	$(PIP) install --quiet --no-build-isolation -e './core[test]' $(foreach p,$(PLUGINS),-e ./plugins/$(p))
	$(PIP) install --quiet tox mypy ruff
	@# The optional native module (small files of a new layer created without the GIL); without it
	@# layerstore writes every file on the extracting thread. A machine without a C compiler still
	@# gets a working store, except in CI, where the module is required.
	$(PIP) install --quiet ./accel || { [ "$$CI" != true ] && echo "warning: layerstore-accel not built (needs a C compiler and Python headers): extraction stays single-threaded"; }
	$(BIN)/python -m compileall -q core/src $(foreach p,$(PLUGINS),plugins/$(p)/src)
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/python demo/run_demo.py

# apt-get update runs once, and only when a package is missing.
apt-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not root: skipping Debian packages ($(APT_PACKAGES))"; fi

test: apt-deps venv
	$(BIN)/tox run -e $(TOX_ENVS)

# Benchmarks (not part of CI: needs ~3 GB of cached data and ~30 minutes).
bench: apt-deps venv
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check .

type: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .tox demo-store
