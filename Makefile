# The README's commands. `make demo` and `make test` install what they need from nothing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
DEBS  := fuse3 libfuse3-dev pkg-config ocfs2-tools kmod util-linux gcc python3-venv python3-dev \
         corosync libcpg4 libcmap4 iproute2
STAMP := $(VENV)/.installed
# What `make deb` needs beyond DEBS: Debian's own packaging tools and the build's Python.
DEB_BUILD_DEBS := debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
                  python3-wheel python3-build python3-pyfuse3 python3-trio python3-pyudev \
                  python3-sysv-ipc dpkg-dev fakeroot lintian gcc libc6-dev
DIST  := dist

.PHONY: setup demo test test-fast test-container test-kernel bench dist deb clean

setup: $(STAMP)

# Installs the Debian packages of $(1) that are missing (root only; others are told).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

$(STAMP): pyproject.toml
	$(call apt_install,$(DEBS))
	@# No udev here: do what its rules would, so ordinary users can open /dev/fuse.
	@if [ -e /dev/fuse ] && [ "$$(id -u)" = 0 ]; then chmod 0666 /dev/fuse; fi
	@# /usr/bin/python3, not a python3 from root's home: ordinary users must run this venv.
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# compat editable mode: a plain .pth path entry. The default import-hook finder costs
	@# every console script ~10 ms of start-up (ocfs2_hb_ctl is called by the kernel).
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(MAKE) -s -C fakecfs/preload
	chmod -R a+rX . 2>/dev/null || true
	touch $(STAMP)

demo: setup
	$(PY) -m fakecfs.demo

test: setup
	$(PY) -m ruff check fakecfs hbctl ocfs2fmt tests bench container debian
	$(PY) -m mypy
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q tests/unit tests/ops

# The Docker lane (a private dockerd, three node containers), the unprivileged lane and the
# entrypoint tests; `make test` runs them too.
test-container: setup
	$(PY) -m pytest -q -s -ra tests/container

# The real-kernel lane: Debian's 6.1 kernel under QEMU (TCG unless KVM is real), the
# catalogue recorded from it, hbctl on real configfs, wire interop; `make test` runs it too.
test-kernel: setup
	$(PY) -m pytest -q -ra tests/kernel tests/catalogue

bench: setup
	$(PY) -m bench

# sdist + wheel under dist/ (git-ignored), as `pip install dist/*.whl` or pipx take them.
dist: setup
	rm -rf $(DIST)/python && $(PY) -m build -o $(DIST)/python .

# The Debian package under dist/deb/, built with debhelper + dh-python from the sdist (which
# so proves it carries what a packager needs), then checked by lintian. Debian's tools only,
# no .venv: it runs as is in a fresh debian:bookworm container (docs/containers.md).
deb:
	$(call apt_install,$(DEB_BUILD_DEBS))
	rm -rf $(DIST)/deb && mkdir -p $(DIST)/deb/src
	/usr/bin/python3 -m build --no-isolation --sdist -o $(DIST)/deb . >/dev/null
	tar -C $(DIST)/deb/src --strip-components=1 -xzf $(DIST)/deb/*.tar.gz
	@# Debian's own python3 and tools only (a python3 earlier on PATH is not Debian's).
	cd $(DIST)/deb/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning $(DIST)/deb/*.changes
	@ls $(DIST)/deb/*.deb

clean:
	rm -rf $(VENV) build $(DIST) *.egg-info .pytest_cache .mypy_cache
	$(MAKE) -s -C fakecfs/preload clean
