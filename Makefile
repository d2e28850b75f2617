# rustpbx_py — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= etc/pbx.toml

.PHONY: run test check-config bench deb clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q --config-settings editable_mode=compat -e '.[postgresql,test]'
	rm -f twisted/plugins/dropin.cache rustpbx_py/plugins/dropin.cache
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/twistd -n --pidfile= pbx --config $(CONFIG)

# npm packages of the JavaScript interop clients (JsSIP), from the
# committed lock file; without npm those tests are skipped.
JS_DIR := rustpbx_py/test/interop/js
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	if command -v npm >/dev/null; then \
	  cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the JsSIP interop tests will be skipped"; fi

test: $(VENV)/.installed $(JS_DIR)/node_modules/.installed
	$(PY) -m twisted.trial $(TRIALFLAGS) rustpbx_py

check-config: $(VENV)/.installed
	$(PY) -m rustpbx_py check-config $(CONFIG)

bench: $(VENV)/.installed
	$(PY) bench/run.py

deb:
	bash debian/build-deb.sh

clean:
	rm -rf $(VENV) build dist *.egg-info _trial_temp* data
