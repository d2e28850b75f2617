# rustpbx_py — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= etc/pbx.toml

.PHONY: run test check-config bench deb clean vendor-jssip

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

# The browser phone's JsSIP (rustpbx_py/web/phone/jssip.min.js, committed):
# the npm package ships CommonJS only, so its lib/ is bundled for the
# browser with esbuild, and the licences of everything bundled are
# collected beside it.  A maintainer's step when JsSIP is updated in
# $(JS_DIR)/package.json (test_web_phone checks the versions agree).
PHONE_DIR := rustpbx_py/web/phone
vendor-jssip: $(JS_DIR)/node_modules/.installed
	v=$$(node -p "require('./$(JS_DIR)/node_modules/jssip/package.json').version"); \
	e=$$(node -p "require('./$(JS_DIR)/node_modules/esbuild/package.json').version"); \
	$(JS_DIR)/node_modules/.bin/esbuild $(JS_DIR)/node_modules/jssip/lib/JsSIP.js --bundle \
	  --format=iife --global-name=JsSIP --minify --target=es2017 --legal-comments=none \
	  --banner:js="/* JsSIP v$$v (npm jssip@$$v, https://jssip.net), bundled for the browser with esbuild $$e (--format=iife --global-name=JsSIP --minify) together with its npm dependencies debug, ms, events and sdp-transform. MIT licensed: see JSSIP-LICENSE.txt beside this file. */" \
	  --log-level=warning --outfile=$(PHONE_DIR)/jssip.min.js; \
	{ echo "The file jssip.min.js in this folder is JsSIP $$v (npm package jssip) bundled"; \
	  echo "with the npm packages it depends on. Their licences follow, each as its package ships it."; \
	  for p in jssip:LICENSE.md debug:LICENSE ms:license.md events:LICENSE sdp-transform:LICENSE; do \
	    n=$${p%%:*}; f=$${p#*:}; pv=$$(node -p "require('./$(JS_DIR)/node_modules/'+'$$n'+'/package.json').version"); \
	    echo; echo "==== $$n $$pv ($$f) ===="; echo; cat $(JS_DIR)/node_modules/$$n/$$f; done; } > $(PHONE_DIR)/JSSIP-LICENSE.txt

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
