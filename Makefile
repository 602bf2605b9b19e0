# The README's commands. `make demo` and `make test` install what they need from nothing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
DEBS  := fuse3 libfuse3-dev pkg-config ocfs2-tools kmod util-linux gcc python3-venv python3-dev \
         corosync libcpg4 libcmap4 iproute2
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-container test-kernel bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
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
	$(PY) -m ruff check fakecfs hbctl tests bench container
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
	$(MAKE) -s -C fakecfs/preload clean
