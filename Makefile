# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv

.PHONY: demo test venv clean

$(VENV)/installed: setup.py requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -r requirements-test.txt -e .
	touch $@

venv: $(VENV)/installed

demo: venv
	$(VENV)/bin/python examples/demo.py

# the static checks first (ruff.toml, mypy.ini), then the tests
test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
